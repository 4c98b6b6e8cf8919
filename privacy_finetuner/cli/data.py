"""``privacy-finetuner data synth|validate|check``: synthetic traces, checking a trace file, and
seeing how a model's chat template renders and masks it before any budget is spent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

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
                "invalid": [r.to_dict() for r in result.invalid],
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


_MARK_OPEN, _MARK_CLOSE = "⟦", "⟧"


def _marked(tokenizer: object, input_ids: list[int], labels: list[int]) -> list[tuple[str, bool]]:
    """The example as runs of text, each flagged whether it carries loss."""
    from privacy_finetuner.data.tokenize import IGNORE_INDEX

    runs: list[tuple[str, bool]] = []
    start = 0
    for k in range(1, len(input_ids) + 1):
        if k == len(input_ids) or (labels[k] != IGNORE_INDEX) != (labels[start] != IGNORE_INDEX):
            text = tokenizer.decode(input_ids[start:k], skip_special_tokens=False)  # type: ignore[attr-defined]
            runs.append((str(text), labels[start] != IGNORE_INDEX))
            start = k
    return runs


@data_app.command("check")
def check(
    path: Annotated[
        Path, typer.Argument(help="Trace file (JSONL of any supported format) or HF dir.")
    ],
    model: Annotated[
        str, typer.Option("--model", help="'tiny', a local path or a hub id.")
    ] = "tiny",
    n: Annotated[int, typer.Option("--n", min=0, help="Traces to print.")] = 2,
    max_length: Annotated[int, typer.Option("--max-length", min=8, help="Tokens per trace.")] = 384,
    tool_call_format: Annotated[
        str, typer.Option("--tool-call-format", help="auto, json, xml, pythonic or deepseek.")
    ] = "auto",
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Render the first traces with the model's chat template, loss-carrying text marked
    ⟦like this⟧, and count truncated traces and traces with no target left."""
    from rich.markup import escape

    from privacy_finetuner.config.schema import ModelConfig
    from privacy_finetuner.data import encode_trace, load_traces
    from privacy_finetuner.data.templates import template_profile
    from privacy_finetuner.modeling.loading import load_tokenizer

    result = load_traces(path, skip_invalid=skip_invalid)
    tokenizer = load_tokenizer(ModelConfig(name=model))
    if not getattr(tokenizer, "name_or_path", ""):
        tokenizer.name_or_path = model  # the embedded tiny tokenizer has no name of its own
    profile = template_profile(tokenizer, tool_call_format)
    truncated = no_target = 0
    shown: list[list[tuple[str, bool]]] = []
    for index, trace in enumerate(result.traces):
        example, cut = encode_trace(
            trace, tokenizer, max_length=max_length, tool_call_format=tool_call_format
        )
        truncated += int(cut)
        no_target += int(example.num_targets == 0)
        if index < n:
            shown.append(_marked(tokenizer, example.input_ids, example.labels))
    summary: dict[str, Any] = {
        "model": profile.model,
        "tool_call_format": profile.tool_call_format,
        "arguments": "json-string" if profile.arguments_as_json else "object",
        "generation_mask": profile.generation_blocks,
        "header_appended_always": bool(profile.header_regardless),
        "traces": len(result.traces),
        "invalid": result.num_invalid,
        "truncated": truncated,
        "no_target_left": no_target,
        "max_length": max_length,
    }
    if as_json:
        summary["shown"] = [
            "".join(f"{_MARK_OPEN}{t}{_MARK_CLOSE}" if loss else t for t, loss in runs)
            for runs in shown
        ]
        print_json(summary)
        return
    for k, runs in enumerate(shown, start=1):
        console.rule(f"trace {k}")
        console.print(
            "".join(
                f"[bold green]{_MARK_OPEN}{escape(t)}{_MARK_CLOSE}[/]" if loss else escape(t)
                for t, loss in runs
            ),
            highlight=False,
            soft_wrap=True,
        )
    console.rule()
    console.print(
        f"model {profile.model}: tool calls as {summary['tool_call_format']}, arguments as "
        f"{summary['arguments']}, "
        + ("template's {% generation %} mask" if profile.generation_blocks else "located turns")
        + (
            ", assistant header appended always (not a target)" if profile.header_regardless else ""
        ),
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    console.print(
        f"{len(result.traces)} traces ({result.num_invalid} invalid skipped): {truncated} truncated "
        f"at {max_length} tokens, {no_target} with no target token left (would be dropped); "
        f"{_MARK_OPEN}…{_MARK_CLOSE} marks the text that carries loss",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Attach the ``data`` command group."""
    app.add_typer(data_app, name="data")
