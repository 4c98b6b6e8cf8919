"""Validation loss, perplexity, tool-call exact match and generation for a (trained) model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from privacy_finetuner.data.tokenize import EncodedExample, ToolCallPrompt
from privacy_finetuner.data.toolcalls import parse_tool_calls, same_calls

__all__ = [
    "EvalResult",
    "generate_text",
    "stop_token_ids",
    "tool_call_exact_match",
    "tool_call_scores",
    "validation_loss",
]


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one evaluation."""

    loss: float
    perplexity: float
    tool_call_exact_match: float | None
    tool_call_prompts: int
    examples: int

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "loss": self.loss,
            "perplexity": self.perplexity,
            "tool_call_exact_match": self.tool_call_exact_match,
            "tool_call_prompts": self.tool_call_prompts,
            "examples": self.examples,
        }


def _model_device(model: Any) -> Any:
    """Where the model's weights are (inputs are built on the CPU and moved there)."""
    return next(model.parameters()).device


def validation_loss(
    model: Any,
    examples: Sequence[EncodedExample],
    *,
    pad_token_id: int,
    batch_size: int = 16,
    max_batches: int | None = None,
) -> float:
    """Mean cross-entropy per target token over ``examples`` (NaN if there are none)."""
    import torch
    from torch.nn import functional as F

    from privacy_finetuner.data.collate import make_collate_fn

    collate = make_collate_fn(pad_token_id)
    device = _model_device(model)
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for b, start in enumerate(range(0, len(examples), batch_size)):
                if max_batches is not None and b >= max_batches:
                    break
                stop = start + batch_size
                batch = {k: v.to(device) for k, v in collate(examples[start:stop]).items()}
                logits = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits
                labels = batch["labels"][:, 1:]
                shifted = logits[:, :-1].float()
                loss = F.cross_entropy(
                    shifted.reshape(-1, shifted.shape[-1]),
                    labels.reshape(-1),
                    ignore_index=-100,
                    reduction="sum",
                )
                total += float(loss)
                count += int((labels != -100).sum())
    finally:
        model.train(was_training)
    return total / count if count else math.nan


def stop_token_ids(tokenizer: Any) -> list[int]:
    """EOS plus the end-of-turn tokens the vocabulary has (Llama 3 closes a tool call with
    ``<|eom_id|>``, a chat turn with ``<|eot_id|>``; Qwen with ``<|im_end|>``): generation of a
    turn stops at whichever the template uses, not only at the tokenizer's single EOS."""
    from privacy_finetuner.data.templates import END_MARKERS

    ids = [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]
    vocab = tokenizer.get_vocab()
    for marker in END_MARKERS:
        token_id = vocab.get(marker)
        if token_id is not None and int(token_id) not in ids:
            ids.append(int(token_id))
    return ids


def _generate_batch(
    model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int
) -> list[str]:
    import torch

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    device = _model_device(model)
    with torch.no_grad():
        out = model.generate(
            input_ids=enc["input_ids"].to(device),
            attention_mask=enc["attention_mask"].to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop_token_ids(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
        )
    new = out[:, enc["input_ids"].shape[1] :]
    return [str(t) for t in tokenizer.batch_decode(new, skip_special_tokens=False)]


def generate_text(
    model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int = 96, batch: int = 16
) -> list[str]:
    """Greedy continuations of already-templated ``prompts``."""
    was_training = model.training
    model.eval()
    outputs: list[str] = []
    try:
        for start in range(0, len(prompts), batch):
            outputs.extend(
                _generate_batch(model, tokenizer, prompts[start : start + batch], max_new_tokens)
            )
    finally:
        model.train(was_training)
    return outputs


def tool_call_scores(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[ToolCallPrompt],
    *,
    max_new_tokens: int = 96,
) -> dict[str, float] | None:
    """``exact_match``: fraction of prompts whose generated tool calls equal the expected ones
    (same function names in order, same arguments after coercion with the tool's JSON schema,
    so XML's ``"3"`` for an integer parameter equals 3), parsed in the template's own tool-call
    format (``prompt.format``); ``name_match``: fraction where only the function names agree."""
    if not prompts:
        return None
    texts = generate_text(
        model, tokenizer, [p.prompt for p in prompts], max_new_tokens=max_new_tokens
    )
    exact = names = 0
    for prompt, text in zip(prompts, texts, strict=True):
        got = parse_tool_calls(text, prompt.format)
        want = [(c.name, c.arguments) for c in prompt.expected]
        exact += int(same_calls(got, want, prompt.tools))
        names += int([g[0] for g in got] == [w[0] for w in want])
    return {"exact_match": exact / len(prompts), "name_match": names / len(prompts)}


def tool_call_exact_match(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[ToolCallPrompt],
    *,
    max_new_tokens: int = 96,
) -> float | None:
    """The ``exact_match`` of :func:`tool_call_scores` (None without prompts)."""
    scores = tool_call_scores(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
    return None if scores is None else scores["exact_match"]
