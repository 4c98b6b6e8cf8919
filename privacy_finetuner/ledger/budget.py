"""Budget arithmetic: multisets of DP-SGD steps keyed by (σ, q) and their ε under PLD.

Composition does not depend on order, so a ledger's events reduce to ``{(σ, q): steps}``; ε of a
data set is ``compute_epsilon`` (dp-accounting's PLD) of that multiset at the data set's δ. Results
are memoised, because the same multiset is asked for by the API, the metrics and the reports.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping

from privacy_finetuner.accounting import DpSegment, compute_epsilon
from privacy_finetuner.accounting.epsilon import DEFAULT_PLD_DISCRETIZATION

__all__ = [
    "ADMISSION_DISCRETIZATION",
    "StepCounts",
    "add_counts",
    "counts_from_segments",
    "counts_to_segments",
    "epsilon_of",
    "segment_key",
    "subtract_counts",
]

#: PLD grid for admission checks: coarser is faster and only over-states ε (never under).
ADMISSION_DISCRETIZATION = 1e-3

StepCounts = dict[str, int]


def segment_key(noise_multiplier: float, sample_rate: float) -> str:
    """The JSON-safe key ``"σ|q"`` (floats in shortest round-trip form)."""
    return f"{float(noise_multiplier)!r}|{float(sample_rate)!r}"


def _parse_key(key: str) -> tuple[float, float]:
    sigma, q = key.split("|")
    return float(sigma), float(q)


def counts_from_segments(segments: Iterable[DpSegment]) -> StepCounts:
    """Merge segments into ``{"σ|q": steps}``."""
    counts: StepCounts = {}
    for seg in segments:
        key = segment_key(seg.noise_multiplier, seg.sample_rate)
        counts[key] = counts.get(key, 0) + seg.steps
    return counts


def counts_to_segments(counts: Mapping[str, int]) -> list[DpSegment]:
    """Inverse of :func:`counts_from_segments` (sorted, zero counts dropped)."""
    out = []
    for key in sorted(counts):
        steps = int(counts[key])
        if steps > 0:
            sigma, q = _parse_key(key)
            out.append(DpSegment(noise_multiplier=sigma, sample_rate=q, steps=steps))
    return out


def add_counts(*parts: Mapping[str, int]) -> StepCounts:
    """Sum of step multisets."""
    total: StepCounts = {}
    for part in parts:
        for key, steps in part.items():
            total[key] = total.get(key, 0) + int(steps)
    return {k: v for k, v in total.items() if v > 0}


def subtract_counts(a: Mapping[str, int], b: Mapping[str, int]) -> StepCounts:
    """``a − b`` per key, floored at 0 (what is left of a reservation after its charges)."""
    return {k: int(v) - int(b.get(k, 0)) for k, v in a.items() if int(v) - int(b.get(k, 0)) > 0}


@functools.lru_cache(maxsize=4096)
def _epsilon_cached(items: tuple[tuple[str, int], ...], delta: float, grid: float) -> float:
    return compute_epsilon(
        counts_to_segments(dict(items)), delta=delta, accountant="pld", pld_discretization=grid
    )


def epsilon_of(counts: Mapping[str, int], *, delta: float, precise: bool = True) -> float:
    """ε(δ) of all steps in ``counts`` composed (PLD).

    Args:
        counts: ``{"σ|q": steps}``; σ is the noise multiplier, q the Poisson sample rate.
        delta: δ of the data set's budget.
        precise: the default PLD grid (reports); False uses the coarser, pessimistic
            admission grid (≥ the precise value), used under the data set lock.
    """
    items = tuple(sorted((k, int(v)) for k, v in counts.items() if int(v) > 0))
    grid = DEFAULT_PLD_DISCRETIZATION if precise else ADMISSION_DISCRETIZATION
    return _epsilon_cached(items, float(delta), grid)
