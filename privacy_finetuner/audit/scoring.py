"""Model-side scoring: how likely a trained causal LM finds each candidate completion.

For a fixed conversation prefix (system + user turns), every completion is rendered with the
model's own chat template as the assistant's reply, and its score is the total negative
log-likelihood (nats) of the reply's tokens, exactly the tokens the training loss covered.
Batched, no gradients, CPU-friendly; torch is imported here and nowhere else in the audit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from privacy_finetuner.errors import DataError

__all__ = ["completion_nll"]

_PLACEHOLDER = "\u2063SECRET\u2063"


def _render_all(
    tokenizer: Any, prefix: Sequence[dict[str, Any]], completions: Sequence[str]
) -> tuple[str, list[str]]:
    from privacy_finetuner.data.tokenize import render_messages

    prompt = render_messages(tokenizer, prefix, add_generation_prompt=True)
    template = render_messages(tokenizer, [*prefix, {"role": "assistant", "content": _PLACEHOLDER}])
    if not template.startswith(prompt) or template.count(_PLACEHOLDER) != 1:
        raise DataError("the chat template is not prefix-consistent; cannot score completions")
    return prompt, [template.replace(_PLACEHOLDER, c) for c in completions]


def completion_nll(
    model: Any,
    tokenizer: Any,
    prefix: Sequence[dict[str, Any]],
    completions: Sequence[str],
    *,
    batch_size: int = 256,
) -> npt.NDArray[np.float64]:
    """Total NLL in nats of each completion as the assistant's reply to ``prefix``.

    Args:
        model: a causal LM (transformers or peft), in eval mode.
        tokenizer: its tokenizer, with a chat template and a pad token.
        prefix: the messages before the reply (chat-template dicts).
        completions: reply texts to score.
        batch_size: sequences per forward pass.

    Returns:
        One NLL per completion (lower = more likely), as float64.
    """
    import torch

    prompt, texts = _render_all(tokenizer, prefix, completions)
    cut = len(prompt)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = np.empty(len(texts), dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            enc = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True)
            width = max(len(ids) for ids in enc["input_ids"])
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            target = torch.zeros((len(chunk), width), dtype=torch.bool)
            for row, (seq, offsets) in enumerate(
                zip(enc["input_ids"], enc["offset_mapping"], strict=True)
            ):
                ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                mask[row, : len(seq)] = 1
                for t, (lo, hi) in enumerate(offsets):
                    target[row, t] = lo >= cut and hi > lo
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            # Only positions that predict a reply token matter (the shared prompt is skipped).
            first = max(1, int(target.any(dim=0).nonzero()[0])) if target.any() else width - 1
            logp = torch.log_softmax(logits[:, first - 1 : -1].float(), dim=-1)
            nxt = ids[:, first:].to(device)
            token_logp = logp.gather(-1, nxt.unsqueeze(-1)).squeeze(-1)
            nll = -(token_logp * target[:, first:].to(device)).sum(dim=1)
            out[start : start + len(chunk)] = nll.double().cpu().numpy()
    return out
