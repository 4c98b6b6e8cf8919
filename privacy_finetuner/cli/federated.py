"""``privacy-finetuner federated plan|simulate|app``: client-level DP fine-tuning with Flower."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from privacy_finetuner.cli._output import console, print_json

__all__ = ["register"]

federated_app = typer.Typer(
    help="Federated fine-tuning with Flower: client-level DP, SecAgg+, local DP-SGD.",
    no_args_is_help=True,
)

ConfigArg = Annotated[
    Path | None, typer.Argument(help="Job YAML with a 'federated' section.", show_default=False)
]
ClientsOpt = Annotated[int | None, typer.Option("--clients", min=2, help="Number of clients N.")]
RoundsOpt = Annotated[int | None, typer.Option("--rounds", min=1, help="Federated rounds.")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Any config key: --set federated.local_dp=true.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _job(config: Path | None, flags: dict[str, Any], sets: list[str] | None) -> Any:
    from privacy_finetuner.cli.train import _parse_set
    from privacy_finetuner.config import load_config, merge_overrides

    overrides = {k: v for k, v in flags.items() if v is not None}
    return load_config(config, merge_overrides(overrides, _parse_set(sets or [])))


@federated_app.command("plan")
def plan(
    config: ConfigArg = None,
    clients: ClientsOpt = None,
    rounds: RoundsOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """σ and the client-level ε after each round, before anything runs (no torch, no Flower)."""
    from privacy_finetuner.accounting import compute_epsilon
    from privacy_finetuner.federated.accountant import plan_client_level

    job = _job(config, {"federated.clients": clients, "federated.rounds": rounds}, set_)
    fed = job.federated
    p = plan_client_level(fed, num_clients=fed.clients, accountant=job.privacy.accountant)
    curve = [
        compute_epsilon([p.segment(r)], delta=p.delta, accountant=p.accountant)
        for r in range(1, p.rounds + 1)
    ]
    payload = {**p.to_dict(), "epsilon_per_round": curve}
    if as_json:
        print_json(payload)
        return
    console.print(
        f"{p.num_clients} clients, {p.rounds} rounds, {p.sampling} cohorts of "
        f"{p.clients_per_round:g} (accounted q = {p.sample_rate:.4g}); σ = {p.noise_multiplier:.4g}, "
        f"C = {p.clipping_norm:g}",
        highlight=False,
    )
    console.print(
        "client-level ε per round: " + ", ".join(f"{e:.3f}" for e in curve) + f" (δ = {p.delta:g})",
        highlight=False,
    )


@federated_app.command("simulate")
def simulate(
    config: ConfigArg = None,
    clients: ClientsOpt = None,
    rounds: RoundsOpt = None,
    clients_per_round: Annotated[
        int | None, typer.Option("--clients-per-round", min=1, help="Cohort size m.")
    ] = None,
    target_epsilon: Annotated[
        float | None, typer.Option("--target-epsilon", help="Client-level ε budget.")
    ] = None,
    local_dp: Annotated[
        bool | None,
        typer.Option("--local-dp/--no-local-dp", help="DP-SGD inside each client (privacy.*)."),
    ] = None,
    secure_aggregation: Annotated[
        bool | None,
        typer.Option("--secagg/--no-secagg", help="SecAgg+: the server sees only the sum."),
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", help="Run directory (default runs/<time>).")
    ] = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Flower's and Ray's logs.")] = False,
) -> None:
    """Run a federation of N simulated clients (users split across them) on this machine."""
    from privacy_finetuner.cli._runtime import quiet_runtime

    job = _job(
        config,
        {
            "federated.clients": clients,
            "federated.rounds": rounds,
            "federated.clients_per_round": clients_per_round,
            "federated.target_epsilon": target_epsilon,
            "federated.local_dp": local_dp,
            "federated.secure_aggregation": secure_aggregation,
        },
        set_,
    )
    from privacy_finetuner.training.rundir import default_run_dir

    run_dir = output_dir or job.output.dir or default_run_dir()
    with quiet_runtime():
        from privacy_finetuner.federated.simulate import simulate as run

        result = run(job, run_dir, verbose=verbose)
    _report(result, as_json)


def _report(result: Any, as_json: bool) -> None:
    report = result.report
    cl, val = report["client_level"], report["validation"]
    local = report["local_dp"]
    payload = {
        "run_dir": str(result.run_dir),
        "clients": cl["num_clients"],
        "rounds": cl["rounds_accounted"],
        "sampling": cl["sampling"],
        "noise_multiplier": cl["noise_multiplier"],
        "clipping_norm": cl["clipping_norm"],
        "client_epsilon": cl["epsilon"],
        "delta": cl["delta"],
        "client_epsilon_per_round": [r["epsilon"] for r in report["rounds"]],
        "local_epsilon_max": local.get("epsilon_max"),
        "secure_aggregation": cl["secure_aggregation"],
        "base_validation_loss": val["base_loss"],
        "validation_loss": val["final_loss"],
        "wall_seconds": round(result.wall_seconds, 1),
    }
    if as_json:
        print_json(payload)
        return
    from rich.table import Table

    table = Table(title="Federated DP fine-tuning finished", show_header=False)
    for key, value in payload.items():
        if isinstance(value, list):
            text = ", ".join(f"{v:.4g}" for v in value)
        elif isinstance(value, float):
            text = f"{value:.4g}"
        else:
            text = str(value)
        table.add_row(key.replace("_", " "), text)
    console.print(table)
    console.print(f"report: {result.run_dir / 'federated_report.json'}")


@federated_app.command("app")
def write_app(
    out: Annotated[Path, typer.Argument(help="Directory of the Flower app to write.")],
    config: ConfigArg = None,
    validation_path: Annotated[
        str,
        typer.Option("--validation-path", help="Held-out traces on the SuperLink host, if any."),
    ] = "",
    set_: SetOpt = None,
) -> None:
    """Write a Flower app (pyproject.toml with the job inside) for ``flwr run`` on a SuperLink."""
    from privacy_finetuner.federated.app_config import write_flower_app

    job = _job(config, {}, set_)
    path = write_flower_app(out, job, validation_path=validation_path)
    console.print(f"wrote {path}; run it with: flwr run {out} <superlink-connection>")


def register(app: typer.Typer) -> None:
    """Attach the ``federated`` command group."""
    app.add_typer(federated_app, name="federated")
