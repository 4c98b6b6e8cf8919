"""``privacy-finetuner evaluate`` and ``generate``: look at a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from privacy_finetuner.cli._output import console, print_json

__all__ = ["register"]


def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    data: Annotated[Path, typer.Option("--data", help="Held-out traces (JSONL).")],
    max_prompts: Annotated[
        int, typer.Option("--max-prompts", min=0, help="Tool-call prompts to generate for.")
    ] = 100,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Validation loss, perplexity and tool-call exact match on held-out traces."""
    from privacy_finetuner.cli._runtime import quiet_runtime

    with quiet_runtime():
        from privacy_finetuner.training.evaluate_run import evaluate_run

        result = evaluate_run(run_dir, data, max_prompts=max_prompts, skip_invalid=skip_invalid)
    if as_json:
        print_json(result.to_dict())
        return
    from rich.table import Table

    table = Table(title=f"Evaluation of {run_dir}", show_header=False)
    table.add_row("examples", str(result.examples))
    table.add_row("validation loss", f"{result.loss:.4f}")
    table.add_row("perplexity", f"{result.perplexity:.3f}")
    em = result.tool_call_exact_match
    table.add_row(
        "tool-call exact match",
        "n/a" if em is None else f"{em:.3f} ({result.tool_call_prompts} prompts)",
    )
    console.print(table)


def generate(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    prompt: Annotated[str, typer.Argument(help="The user message.")],
    system: Annotated[str | None, typer.Option("--system", help="System prompt.")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 96,
) -> None:
    """Answer one user message with the trained model (greedy)."""
    from privacy_finetuner.cli._runtime import quiet_runtime

    with quiet_runtime():
        from privacy_finetuner.training.evaluate_run import generate_reply

        text = generate_reply(run_dir, prompt, system=system, max_new_tokens=max_new_tokens)
    console.print(text, highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Attach ``evaluate`` and ``generate``."""
    app.command("evaluate")(evaluate)
    app.command("generate")(generate)
