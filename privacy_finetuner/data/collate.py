"""Torch side of the data: a map-style dataset of encoded traces and the padding collate_fn."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from privacy_finetuner.data.tokenize import IGNORE_INDEX, EncodedExample

__all__ = ["PadCollator", "TraceDataset", "make_collate_fn"]


class TraceDataset(Dataset[EncodedExample]):
    """Encoded traces; ``user_ids`` lists each example's privacy unit for per-user DP."""

    def __init__(self, examples: Sequence[EncodedExample]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> EncodedExample:
        return self.examples[index]

    @property
    def user_ids(self) -> list[str]:
        """Each example's user (examples without one are their own user)."""
        return [e.user_id or f"__example_{i}" for i, e in enumerate(self.examples)]


class PadCollator:
    """Right-pads a list of examples into ``input_ids``, ``attention_mask`` and ``labels`` (B, T);
    padding has label -100 and attention 0, so it carries neither loss nor gradient."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, batch: Sequence[EncodedExample]) -> dict[str, torch.Tensor]:
        width = max((len(e.input_ids) for e in batch), default=1)
        n = len(batch)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
        for i, e in enumerate(batch):
            t = len(e.input_ids)
            input_ids[i, :t] = torch.tensor(e.input_ids, dtype=torch.long)
            attention[i, :t] = 1
            labels[i, :t] = torch.tensor(e.labels, dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def make_collate_fn(pad_token_id: int) -> PadCollator:
    """The collate_fn for a DataLoader over a :class:`TraceDataset`."""
    return PadCollator(pad_token_id)
