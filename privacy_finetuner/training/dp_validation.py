"""A differentially private estimate of the final validation loss on private held-out units.

The exact validation loss on held-out private users is not covered by ε, so the released report
carries this estimate instead: each held-out unit's mean loss per target token is clipped to
[0, L] with L = ln(vocabulary size) (the loss of a uniform prediction; public), the clipped
values are summed, Gaussian noise N(0, σ_v²L²) from OS entropy is added once, and the sum is
divided by the number of held-out units.

Accounting: replacing one unit's data by a null unit (zero-out) moves the sum by at most L, so
the release is one Gaussian mechanism with noise multiplier σ_v. The split holds out whole units
by a hash of the unit's identity and the public seed, so held-out units are disjoint from the
training units and the two releases compose in *parallel*: every unit is covered by
max(ε_train, ε_v). σ_v is calibrated to ε_v = ε_train at the same δ, so the run's ε is unchanged.
With ``data.validation_path`` the held-out users may also be training users (sequential
composition would apply), so no estimate is made there: declare such a set public
(``data.validation_public``) or leave it unpublished.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from privacy_finetuner.accounting.relations import gaussian_noise_for_epsilon
from privacy_finetuner.data.tokenize import EncodedExample

__all__ = ["DpEstimate", "dp_mean", "dp_validation_loss", "per_unit_losses"]

_RNG = secrets.SystemRandom()


@dataclass(frozen=True)
class DpEstimate:
    """A released DP estimate and how it was made (all public)."""

    value: float
    clip: float
    noise_multiplier: float
    epsilon: float
    delta: float

    def to_report(self) -> dict[str, Any]:
        """The released form (``metrics.dp_validation``)."""
        return {
            "loss": self.value,
            "perplexity": math.exp(min(max(self.value, 0.0), 50.0)),
            "clip": self.clip,
            "noise_multiplier": self.noise_multiplier,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "aggregation": "mean over held-out units of each unit's loss per target token, "
            "clipped to [0, clip]; Gaussian noise on the sum",
            "composition": "parallel: held-out units are disjoint from the training units",
        }


def per_unit_losses(
    model: Any,
    examples: Sequence[EncodedExample],
    *,
    pad_token_id: int,
    privacy_unit: str,
    batch_size: int = 16,
) -> list[float]:
    """Each unit's mean loss per target token (a user's over all of their examples)."""
    import torch
    from torch.nn import functional as F

    from privacy_finetuner.data.collate import make_collate_fn

    collate = make_collate_fn(pad_token_id)
    device = next(model.parameters()).device
    sums: dict[str, list[float]] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(examples), batch_size):
                chunk = examples[start : start + batch_size]
                batch = {k: v.to(device) for k, v in collate(chunk).items()}
                logits = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits[:, :-1]
                labels = batch["labels"][:, 1:]
                token_loss = F.cross_entropy(
                    logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none"
                )
                totals = token_loss.sum(dim=1).tolist()
                counts = (labels != -100).sum(dim=1).tolist()
                for i, (total, count) in enumerate(zip(totals, counts, strict=True)):
                    example = chunk[i]
                    key = (
                        example.user_id
                        if privacy_unit == "user" and example.user_id is not None
                        else f"__example_{start + i}"
                    )
                    acc = sums.setdefault(key, [0.0, 0.0])
                    acc[0] += float(total)
                    acc[1] += float(count)
    finally:
        model.train(was_training)
    return [total / count for total, count in sums.values() if count > 0]


def dp_mean(values: Sequence[float], *, clip: float, epsilon: float, delta: float) -> DpEstimate:
    """(ε, δ)-DP mean of ``values`` clipped to [0, ``clip``] (zero-out: sensitivity ``clip``).

    The count is treated as public, as N is for training (zero-out relation).
    """
    sigma = gaussian_noise_for_epsilon(epsilon, delta=delta)
    total = sum(min(max(v, 0.0), clip) for v in values)
    noisy = total + _RNG.gauss(0.0, sigma * clip)
    return DpEstimate(noisy / max(len(values), 1), clip, sigma, epsilon, delta)


def dp_validation_loss(
    model: Any,
    examples: Sequence[EncodedExample],
    *,
    pad_token_id: int,
    vocab_size: int,
    privacy_unit: str,
    epsilon: float,
    delta: float,
) -> DpEstimate | None:
    """The DP estimate of the held-out loss, or None without held-out units or a finite ε."""
    if not examples or not (0 < epsilon < math.inf):
        return None
    losses = per_unit_losses(model, examples, pad_token_id=pad_token_id, privacy_unit=privacy_unit)
    if not losses:
        return None
    return dp_mean(losses, clip=math.log(vocab_size), epsilon=epsilon, delta=delta)
