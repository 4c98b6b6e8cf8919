"""``privacy-finetuner epsilon`` and ``calibrate``: ε of a DP-SGD run and σ for a target ε."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from privacy_finetuner.accounting import (
    DpSegment,
    calibrate_noise_multiplier,
    check_accountant,
    check_delta,
    check_noise_multiplier,
    estimate_epsilon,
)
from privacy_finetuner.cli._output import console, print_json

AccountantOpt = Annotated[
    str, typer.Option("--accountant", help="pld (tight, default) or rdp (upper bound).")
]
DeltaOpt = Annotated[float, typer.Option("--delta", help="δ of the (ε, δ) guarantee.")]
SampleRateOpt = Annotated[
    float, typer.Option("--sample-rate", "-q", help="Poisson sample rate q = batch size / n.")
]
StepsOpt = Annotated[int, typer.Option("--steps", help="Number of logical (noised) steps.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")]


def _table(title: str, rows: dict[str, str]) -> Table:
    table = Table(title=title, show_header=False)
    for key, value in rows.items():
        table.add_row(key, value)
    return table


def epsilon(
    noise_multiplier: Annotated[
        float, typer.Option("--noise-multiplier", "-s", help="σ: noise std / clip norm.")
    ],
    sample_rate: SampleRateOpt,
    steps: StepsOpt,
    delta: DeltaOpt = 1e-5,
    accountant: AccountantOpt = "pld",
    as_json: JsonOpt = False,
) -> None:
    """ε spent by DP-SGD with Poisson sampling after STEPS steps."""
    check_noise_multiplier(noise_multiplier)
    check_delta(delta)
    check_accountant(accountant)
    segment = DpSegment(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
    found = estimate_epsilon([segment], delta=delta, accountant=accountant)
    eps = found.epsilon
    if as_json:
        payload: dict[str, object] = {
            "epsilon": eps,
            "delta": delta,
            "accountant": accountant,
            "method": found.method,
        }
        if found.note is not None:
            payload["note"] = found.note
        print_json(payload)
        return
    rows = {
        "noise multiplier σ": f"{noise_multiplier:g}",
        "sample rate q": f"{sample_rate:g}",
        "steps": str(steps),
        "δ": f"{delta:g}",
        "accountant": accountant,
        "ε": f"{eps:.4f}",
    }
    if found.method != accountant:
        rows["computed with"] = found.method
    console.print(_table("DP-SGD privacy", rows))
    if found.note is not None:
        console.print(f"note: {found.note}", highlight=False)


def calibrate(
    target_epsilon: Annotated[float, typer.Option("--target-epsilon", help="ε to reach.")],
    sample_rate: SampleRateOpt,
    steps: StepsOpt,
    delta: DeltaOpt = 1e-5,
    accountant: AccountantOpt = "pld",
    as_json: JsonOpt = False,
) -> None:
    """Smallest noise multiplier σ whose ε after STEPS steps is at most the target."""
    result = calibrate_noise_multiplier(
        target_epsilon=target_epsilon,
        delta=delta,
        sample_rate=sample_rate,
        steps=steps,
        accountant=accountant,
    )
    if as_json:
        print_json({"noise_multiplier": result.noise_multiplier, "epsilon": result.epsilon})
        return
    rows = {
        "target ε": f"{target_epsilon:g}",
        "δ": f"{delta:g}",
        "sample rate q": f"{sample_rate:g}",
        "steps": str(steps),
        "accountant": accountant,
        "noise multiplier σ": f"{result.noise_multiplier:.4f}",
        "ε reached": f"{result.epsilon:.4f}",
    }
    console.print(_table("Noise calibration", rows))


def register(app: typer.Typer) -> None:
    """Attach the accounting commands to the root app."""
    app.command("epsilon")(epsilon)
    app.command("calibrate")(calibrate)
