"""Evaluate or query a finished run directory (``evaluate`` / ``generate`` commands)."""

from __future__ import annotations

import math
from pathlib import Path

from privacy_finetuner.config.loader import load_config
from privacy_finetuner.data.loaders import load_traces
from privacy_finetuner.data.tokenize import encode_traces, render_messages, tool_call_prompts
from privacy_finetuner.errors import DataError
from privacy_finetuner.modeling.loading import load_trained
from privacy_finetuner.training.evaluation import (
    EvalResult,
    generate_text,
    tool_call_exact_match,
    validation_loss,
)
from privacy_finetuner.training.prepare import apply_guard

__all__ = ["evaluate_run", "generate_reply"]


def evaluate_run(
    run_dir: str | Path, data: str | Path, *, max_prompts: int = 100, skip_invalid: bool = False
) -> EvalResult:
    """Loss, perplexity and tool-call exact match of the run's model on ``data``.

    The traces go through the same guard settings as the training data did.
    """
    run = Path(run_dir)
    loaded = load_trained(run)
    config = load_config(run / "config.yaml")
    traces = load_traces(data, skip_invalid=skip_invalid).traces
    traces, _ = apply_guard(traces, config.guard)
    examples, _ = encode_traces(traces, loaded.tokenizer, max_length=config.data.max_length)
    if not examples:
        raise DataError(f"{data}: no example with an assistant turn to evaluate")
    loss = validation_loss(loaded.model, examples, pad_token_id=loaded.tokenizer.pad_token_id)
    prompts = tool_call_prompts(traces, loaded.tokenizer)[:max_prompts]
    em = tool_call_exact_match(loaded.model, loaded.tokenizer, prompts) if prompts else None
    return EvalResult(
        loss=loss,
        perplexity=math.exp(loss) if loss < 50 else math.inf,
        tool_call_exact_match=em,
        tool_call_prompts=len(prompts),
        examples=len(examples),
    )


def generate_reply(
    run_dir: str | Path, prompt: str, *, system: str | None = None, max_new_tokens: int = 96
) -> str:
    """The model's greedy reply to one user message (special tokens removed)."""
    loaded = load_trained(Path(run_dir))
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    text = render_messages(loaded.tokenizer, messages, add_generation_prompt=True)
    out = generate_text(loaded.model, loaded.tokenizer, [text], max_new_tokens=max_new_tokens)[0]
    eos = loaded.tokenizer.eos_token
    if eos and eos in out:
        out = out[: out.index(eos)]
    for token in (loaded.tokenizer.pad_token or "",):
        if token:
            out = out.replace(token, "")
    return out.strip()
