"""The per-layer plan: how each weight's per-example gradient norm is obtained this micro-batch.

For a weight (p × d) used on T tokens per example, B examples, the clipped sum always costs the
non-private weight-gradient matmul (2·B·T·p·d FLOPs, the book-keeping of Bu et al. 2023). What
differs is the norm:

========== =============================== ====================================================
mode       extra FLOPs                     extra memory
========== =============================== ====================================================
ghost      2·B·T²·(p + d) (two Grams)      B·T² fp32, transient
materialise 0 (per-example grads replace   B·p·d fp32, held until the micro-batch's clip
           the weight-gradient matmul)
norm_only  2·B·T·p·d (per-example grads    a bounded chunk, transient
           made block by block, dropped)
========== =============================== ====================================================

On a device without bf16-in/fp32-out matmuls (the CPU) the exact Gram and per-example products
run at fp32 speed: ``exact_penalty`` (fp32 time / bf16 time) scales their cost, so there a
materialised product costs ``(penalty − 1)`` times the matmul it replaces. Weights are
materialised in order of cost saved per byte until the memory budget is spent; the others take
the cheaper of ghost and norm-only. The choice never changes the result, only its cost.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["GHOST", "MATERIALISE", "NORM_ONLY", "LayerPlan", "WeightSpec", "plan_weights"]

GHOST = "ghost"
MATERIALISE = "materialise"
NORM_ONLY = "norm_only"
BYTES_PER_ELEMENT = 4  # materialised per-example gradients are fp32

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class WeightSpec(Generic[K]):
    """A Linear-like weight: its key, shape (p × d) and number of uses (2 for a tied weight)."""

    key: K
    rows: int
    cols: int
    uses: int = 1


@dataclass(frozen=True)
class LayerPlan:
    """The chosen mode of one weight with its modelled extra FLOPs and held bytes."""

    mode: str
    extra_flops: float
    held_bytes: int


def _costs(spec: WeightSpec[K], batch: int, tokens: int, penalty: float) -> dict[str, float]:
    p, d = spec.rows, spec.cols
    matmul = 2.0 * batch * tokens * p * d
    return {
        GHOST: penalty * 2.0 * batch * tokens**2 * (p + d),
        NORM_ONLY: penalty * matmul,
        MATERIALISE: (penalty - 1.0) * matmul * spec.uses,
    }


def plan_weights(
    specs: Sequence[WeightSpec[K]],
    *,
    batch: int,
    tokens: int,
    budget_bytes: float,
    exact_penalty: float = 1.0,
) -> dict[K, LayerPlan]:
    """Choose ghost / materialise / norm-only for every weight of one micro-batch shape.

    Args:
        specs: the trainable Linear-like weights.
        batch: examples in the micro-batch (B).
        tokens: tokens per example (T).
        budget_bytes: memory allowed for held per-example gradients, all weights together.
        exact_penalty: fp32-over-bf16 matmul time where exact products need fp32 inputs (≥ 1).
    """
    penalty = max(1.0, exact_penalty)
    plans: dict[K, LayerPlan] = {}
    candidates: list[tuple[float, WeightSpec[K], float, int]] = []
    for spec in specs:
        costs = _costs(spec, batch, tokens, penalty)
        free = GHOST if costs[GHOST] <= costs[NORM_ONLY] else NORM_ONLY
        plans[spec.key] = LayerPlan(free, costs[free], 0)
        held = BYTES_PER_ELEMENT * batch * spec.rows * spec.cols * spec.uses
        saving = costs[free] - costs[MATERIALISE]
        if saving > 0:
            candidates.append((saving / max(held, 1), spec, costs[MATERIALISE], held))
    candidates.sort(key=lambda item: -item[0])
    used = 0.0
    for _, spec, cost, held in candidates:
        if used + held <= budget_bytes:
            used += held
            plans[spec.key] = LayerPlan(MATERIALISE, cost, held)
    return plans


def describe(plans: Mapping[K, LayerPlan], names: Mapping[K, str]) -> str:
    """One line per mode: how many weights, their modelled extra GFLOPs and held MiB."""
    parts = []
    for mode in (MATERIALISE, GHOST, NORM_ONLY):
        chosen = [k for k, v in plans.items() if v.mode == mode]
        if not chosen:
            continue
        flops = sum(plans[k].extra_flops for k in chosen) / 1e9
        held = sum(plans[k].held_bytes for k in chosen) / 2**20
        sample = ", ".join(names.get(k, "?") for k in chosen[:3])
        more = f", +{len(chosen) - 3}" if len(chosen) > 3 else ""
        parts.append(
            f"{mode}: {len(chosen)} ({sample}{more}) {flops:.2f} extra GFLOP, {held:.0f} MiB"
        )
    return "; ".join(parts)
