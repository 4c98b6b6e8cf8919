"""``privacy-finetuner audit RUN_DIR`` and ``compliance RUN_DIR`` (also ``report compliance``
when a ``report`` group exists), and ``report release RUN_DIR OUT`` (the publishable bundle).

``compliance`` exits 2 on a run that did not finish (``status.json`` not ``completed`` or
``budget_exhausted``) unless ``--allow-unfinished`` is given: a pack for a half-written run would
read as evidence for a model that does not exist. ``audit`` exits 3 when the measured ε lower
bound exceeds the proven ε: the run is not as private as its report says, which means a bug, not bad luck (at 95 % confidence).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from privacy_finetuner.cli._output import console, print_error, print_json

__all__ = [
    "AUDIT_FAILED_EXIT",
    "UNFINISHED_RUN_EXIT",
    "audit",
    "compliance",
    "register",
    "release",
]

#: Exit status when the audit contradicts the proven ε.
AUDIT_FAILED_EXIT = 3

#: Exit status for ``compliance`` on an unfinished run: input to fix (see ``EXIT_CODES``).
UNFINISHED_RUN_EXIT = 2

RunDirArg = Annotated[Path, typer.Argument(help="A finished run directory.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")]


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def audit(
    run_dir: RunDirArg,
    candidates: Annotated[
        int, typer.Option("--candidates", help="Random secrets each canary is ranked against.")
    ] = 10_000,
    confidence: Annotated[
        float, typer.Option("--confidence", help="Confidence of the ε lower bound.")
    ] = 0.95,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Sequences per forward.")] = 256,
    as_json: JsonOpt = False,
) -> None:
    """Measure empirical privacy: canary exposure, one-run ε lower bound, membership inference.

    Writes audit.json and audit.html into RUN_DIR; exits 3 if the bound exceeds the proven ε.
    """
    from privacy_finetuner.audit.runner import run_audit

    result = run_audit(run_dir, candidates=candidates, confidence=confidence, batch_size=batch_size)
    data = result.to_dict()
    if as_json:
        summary = {k: v for k, v in data.items() if k not in {"exposure", "mia"}}
        summary["median_exposure_bits"] = data["exposure"].get("median_bits")
        summary["max_exposure_bits"] = data["exposure"].get("max_bits")
        summary["mia_auc"] = {m["attack"]: m["auc"] for m in data["mia"]}
        print_json(summary)
    else:
        table = Table(title=f"Empirical privacy of {run_dir}", show_header=False)
        table.add_row("proven ε (per canary)", _fmt(result.claimed_epsilon))
        table.add_row(
            f"measured ε lower bound ({confidence:.0%})", _fmt(result.one_run.epsilon_lower)
        )
        table.add_row("canaries (trained on)", f"{result.canaries} ({result.one_run.members})")
        table.add_row(
            "median / max exposure (bits)",
            (
                f"{_fmt(data['exposure'].get('median_bits'))} / "
                f"{_fmt(data['exposure'].get('max_bits'))}"
            ),
        )
        for m in result.mia:
            table.add_row(
                f"MIA {m.attack} AUC / TPR@1%FPR", f"{m.auc:.3f} / {m.tpr_at_1pct_fpr:.3f}"
            )
        console.print(table)
        for note in result.notes:
            console.print(f"note: {note}", highlight=False)
    if result.violation:
        print_error(result.message)
        raise typer.Exit(AUDIT_FAILED_EXIT)
    if not as_json:
        console.print(result.message, highlight=False)


def compliance(
    run_dir: RunDirArg,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output directory (default: RUN_DIR).")
    ] = None,
    allow_unfinished: Annotated[
        bool,
        typer.Option(
            "--allow-unfinished",
            help="Write the pack for a run that did not finish; the pack flags it.",
        ),
    ] = False,
) -> None:
    """Write COMPLIANCE.md and compliance.html for a run (GDPR, HIPAA, EU AI Act).

    Statements of fact read from the run directory, not legal advice. Exits 2 on a run that
    did not finish, unless --allow-unfinished.
    """
    from privacy_finetuner.audit.compliance import build_compliance, write_compliance

    report = build_compliance(run_dir)
    if not report.run_finished and not allow_unfinished:
        state = (
            report.run_status.value
            if report.run_status is not None
            else "status.json absent or unreadable"
        )
        print_error(
            f"{run_dir} is not a finished run ({state}); finish or --resume it, or "
            "pass --allow-unfinished to write a pack that says so"
        )
        raise typer.Exit(UNFINISHED_RUN_EXIT)
    md, html = write_compliance(run_dir, out)
    missing = report.missing
    console.print(f"wrote {md} and {html}", highlight=False)
    if missing:
        console.print("evidence absent: " + ", ".join(missing), highlight=False)


def release(
    run_dir: RunDirArg,
    out: Annotated[
        Path, typer.Argument(help="A new or empty directory for the bundle.", show_default=False)
    ],
    allow_invalid: Annotated[
        bool,
        typer.Option(
            "--allow-invalid-epsilon",
            help="Release a run whose ε is not valid (secure_mode off); the card says so.",
        ),
    ] = False,
) -> None:
    """Write the publishable bundle of a run into OUT: model, tokenizer, MODEL_CARD.md,
    privacy_report.json and a report.html without the internal diagnostics.

    Only what the reported ε covers; internal_diagnostics.json and the rest stay behind.
    """
    from privacy_finetuner.report.release import write_release

    written = write_release(run_dir, out, allow_invalid=allow_invalid)
    console.print(
        f"wrote the release bundle to {out}: " + ", ".join(p.name for p in written),
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Attach ``audit`` and ``compliance``; also ``report compliance`` and ``report release`` if
    a ``report`` group was registered before this module."""
    app.command("audit")(audit)
    app.command("compliance")(compliance)
    for group in app.registered_groups:
        if group.name == "report" and group.typer_instance is not None:
            group.typer_instance.command("compliance")(compliance)
            group.typer_instance.command("release")(release)
