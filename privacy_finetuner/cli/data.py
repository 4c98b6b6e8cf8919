"""``privacy-finetuner data synth|validate``: synthetic traces and checking a trace file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from privacy_finetuner.cli._output import console, print_json

__all__ = ["register"]

data_app = typer.Typer(help="Create and check agent-trace data sets.", no_args_is_help=True)


@data_app.command("synth")
def synth(
    out: Annotated[Path, typer.Argument(help="Output JSONL file.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of traces.")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same file.")] = 0,
    canaries: Annotated[int, typer.Option("--canaries", min=0, help="Secrets to plant.")] = 0,
    canary_repeats: Annotated[
        int, typer.Option("--canary-repeats", min=1, help="Traces per canary.")
    ] = 1,
    domains: Annotated[
        list[str] | None,
        typer.Option("--domain", help="Only this domain (support, booking, banking); repeatable."),
    ] = None,
) -> None:
    """Write N synthetic support/booking/banking agent traces with tool calls and PII."""
    from privacy_finetuner.data import generate_traces, write_traces

    result = generate_traces(
        n, seed=seed, canaries=canaries, canary_repeats=canary_repeats, domains=domains or None
    )
    write_traces(result.traces, out)
    message = f"wrote {len(result.traces)} traces from {len({t.user_id for t in result.traces})} "
    message += f"users to {out}"
    if result.canaries:
        canary_path = out.with_name(out.name + ".canaries.json")
        canary_path.write_text(
            json.dumps([c.to_dict() for c in result.canaries], indent=2), encoding="utf-8"
        )
        message += f"; {len(result.canaries)} canaries recorded in {canary_path}"
    console.print(message, highlight=False, soft_wrap=True)


@data_app.command("validate")
def validate(
    path: Annotated[Path, typer.Argument(help="JSONL trace file.")],
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="List every invalid record.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check a trace file; the first error (or, with --skip-invalid, all) with file:line."""
    from privacy_finetuner.data import load_traces

    result = load_traces(path, skip_invalid=skip_invalid, allow_empty=True)
    if as_json:
        print_json(
            {
                "valid": len(result.traces),
                "invalid": [{"line": r.line, "reason": r.reason} for r in result.invalid],
            }
        )
    else:
        for record in result.invalid:
            console.print(f"{path}:{record.line}: {record.reason}", highlight=False)
        console.print(
            f"{len(result.traces)} valid, {result.num_invalid} invalid records", highlight=False
        )
    if result.invalid or not result.traces:
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Attach the ``data`` command group."""
    app.add_typer(data_app, name="data")
