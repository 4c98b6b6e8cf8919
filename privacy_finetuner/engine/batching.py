"""Per-example causal-LM loss and the split of a logical batch into physical micro-batches.

A batch is either a dict of batch-first tensors (Hugging Face style, read by
:func:`causal_lm_loss`) or a tuple of batch-first tensors, as a ``TensorDataset`` yields them
(Opacus tutorials); a tuple batch needs a ``loss_fn`` that says how to read it, e.g.
``lambda model, b: F.cross_entropy(model(b[0]), b[1], reduction="none")``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from privacy_finetuner.engine.contributions import promote

__all__ = [
    "LossFn",
    "batch_values",
    "causal_lm_loss",
    "micro_batches",
    "slice_batch",
    "to_device",
]

#: ``loss_fn(model, batch) -> (B,)`` per-example losses; the engine backpropagates their sum.
#: ``batch`` is what the loader's ``collate_fn`` returned: a dict, or a tuple of tensors.
LossFn = Callable[[nn.Module, Any], Tensor]


def causal_lm_loss(model: nn.Module, batch: Mapping[str, Any]) -> Tensor:
    """Per-example loss: mean cross-entropy over the example's own target tokens.

    Positions whose label is -100 (padding, prompt, masked) count for nothing; an example with no
    target token has loss 0 and therefore gradient 0. Labels follow Hugging Face's convention (the
    model shifts them): ``logits[:, :-1]`` predict ``labels[:, 1:]``. Computed in fp32.
    """
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    out = model(**inputs)
    logits: Tensor = out if isinstance(out, Tensor) else out.logits
    labels: Tensor = batch["labels"][:, 1:]
    shifted = promote(logits[:, :-1])
    tokens = F.cross_entropy(
        shifted.reshape(-1, shifted.shape[-1]),
        labels.reshape(-1),
        ignore_index=-100,
        reduction="none",
    ).view(labels.shape)
    count = (labels != -100).sum(1)
    return tokens.sum(1) / count.clamp_min(1).to(tokens.dtype)


def batch_values(batch: Any) -> list[Any]:
    """The values of a dict batch, or the items of a tuple batch."""
    return list(batch.values()) if isinstance(batch, Mapping) else list(batch)


def slice_batch(batch: Any, start: int, stop: int, size: int) -> Any:
    """Rows ``start:stop`` of every batch-first tensor (other values are passed through); a
    dict stays a dict, a tuple a tuple."""

    def rows(v: Any) -> Any:
        if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == size:
            return v[start:stop]
        return v

    if isinstance(batch, Mapping):
        return {k: rows(v) for k, v in batch.items()}
    return tuple(rows(v) for v in batch)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move the batch's tensors to the model's device (a no-op for tensors already there)."""

    def move(v: Any) -> Any:
        return v.to(device, non_blocking=True) if isinstance(v, Tensor) else v

    if isinstance(batch, Mapping):
        return {k: move(v) for k, v in batch.items()}
    return tuple(move(v) for v in batch)


def micro_batches(unit_index: Tensor, max_size: int) -> Iterator[tuple[int, int]]:
    """(start, stop) ranges of at most ``max_size`` examples that never split a unit.

    ``unit_index`` is non-decreasing (a unit's examples are contiguous). A unit with more than
    ``max_size`` examples gets a micro-batch of its own: its norm needs all of them at once.
    """
    n = unit_index.numel()
    if n == 0:
        return
    boundaries = [0, *(torch.nonzero(unit_index[1:] != unit_index[:-1]).flatten() + 1).tolist(), n]
    start = 0
    for i in range(1, len(boundaries)):
        end = boundaries[i]
        if end - start > max_size and boundaries[i - 1] > start:
            yield start, boundaries[i - 1]
            start = boundaries[i - 1]
    if start < n:
        yield start, n
