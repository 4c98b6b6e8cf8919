"""ε of DP-SGD with Poisson sampling, computed by Google's dp-accounting.

A run (or a ledger of runs) is a list of :class:`DpSegment`: stretches of steps that share one
noise multiplier σ and one sample rate q. Each step is the subsampled Gaussian mechanism
``PoissonSampledDpEvent(q, GaussianDpEvent(σ))``; segments compose. We only translate segments into
dp-accounting events and ask its PLD or RDP accountant; the mathematics is theirs.

The cost of a PLD grows with the privacy loss's range divided by the grid: for a small σ (or many
steps at q = 1, which compose into one Gaussian of σ/√steps) the range is 1/σ² and the default
grid would need billions of points (tens of GB, minutes). Before building anything we measure the
range from the mechanism's tail bounds and, past a fixed number of points, switch to a coarser grid
(still pessimistic, so ε stays an upper bound; the note names the grid) or, when even that cannot
beat it, to the RDP bound. Every answer is an upper bound on ε, and never above the RDP bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dp_accounting
from dp_accounting.pld import common as pld_common
from dp_accounting.pld import privacy_loss_distribution as pld_lib
from dp_accounting.pld import privacy_loss_mechanism
from dp_accounting.rdp import rdp_privacy_accountant

from privacy_finetuner.accounting._validation import (
    check_accountant,
    check_delta,
    check_noise_multiplier,
    check_sample_rate,
    check_steps,
)

__all__ = [
    "DEFAULT_PLD_DISCRETIZATION",
    "MAX_PLD_POINTS",
    "DpSegment",
    "EpsilonEstimate",
    "compute_epsilon",
    "estimate_epsilon",
    "segments_to_event",
]

#: dp-accounting's default PLD grid; pessimistic, so a coarser grid only over-states ε.
DEFAULT_PLD_DISCRETIZATION = 1e-4
#: Most points one step's PLD may have before the grid is coarsened (building costs ~10 µs each).
MAX_PLD_POINTS = 250_000
#: Most points the composed PLD may have (float64: 32 MB; the FFT holds a few complex copies).
MAX_COMPOSED_POINTS = 4_000_000
#: dp-accounting's defaults, repeated so the size checks see exactly what it will build.
_LOG_MASS_TRUNCATION = -50.0
_TAIL_MASS_TRUNCATION = 1e-15
#: Coarsest PLD grid we build: beyond it dp-accounting's arithmetic overflows (expm1 of the grid),
#: and an ε that loose is where the RDP bound is the better answer anyway.
_MAX_GRID = 1.0


@dataclass(frozen=True)
class DpSegment:
    """``steps`` consecutive DP-SGD steps with noise multiplier σ and Poisson sample rate q.

    Attributes:
        noise_multiplier: σ, the Gaussian noise std divided by the clip norm C (0 means no noise).
        sample_rate: q, the probability that a unit (example or user) joins a logical batch.
        steps: number of logical steps, each accounted once.
    """

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        check_noise_multiplier(self.noise_multiplier, allow_zero=True)
        check_sample_rate(self.sample_rate)
        check_steps(self.steps)

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready form, the one stored in checkpoints, reports and the ledger."""
        return {
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DpSegment:
        """Inverse of :meth:`to_dict`; validates the values again."""
        return cls(
            noise_multiplier=float(data["noise_multiplier"]),
            sample_rate=float(data["sample_rate"]),
            steps=int(data["steps"]),
        )


@dataclass(frozen=True)
class EpsilonEstimate:
    """ε and how it was obtained, so a caller can show when it is looser than the exact PLD.

    Attributes:
        epsilon: an upper bound on ε(δ).
        method: "pld" (the requested grid), "pld-coarse" (a coarser grid, to bound time and
            memory) or "rdp" (asked for, or the bounded fallback).
        discretization: the PLD grid used (None for RDP).
        note: one sentence for the user when the bounded path was taken, else None.
    """

    epsilon: float
    method: str
    discretization: float | None
    note: str | None = None


def _step_event(segment: DpSegment) -> dp_accounting.DpEvent:
    gaussian = dp_accounting.GaussianDpEvent(segment.noise_multiplier)
    if segment.sample_rate == 1.0:
        return gaussian
    return dp_accounting.PoissonSampledDpEvent(segment.sample_rate, gaussian)


def segments_to_event(segments: Iterable[DpSegment]) -> dp_accounting.DpEvent:
    """The dp-accounting event describing all segments composed in order."""
    events = [dp_accounting.SelfComposedDpEvent(_step_event(s), s.steps) for s in segments]
    if len(events) == 1:
        return events[0]
    return dp_accounting.ComposedDpEvent(events)


def _rdp_epsilon(segments: Sequence[DpSegment], delta: float) -> float:
    acct = rdp_privacy_accountant.RdpAccountant()
    acct.compose(segments_to_event(segments))
    return float(acct.get_epsilon(target_delta=delta))


@dataclass(frozen=True)
class _Mechanism:
    """One PLD that dp-accounting builds: a Gaussian (q = 1, all its steps folded into σ/√steps,
    as its PLD accountant does) or a subsampled Gaussian self-composed ``count`` times."""

    sigma: float
    q: float
    count: int

    @classmethod
    def of(cls, segment: DpSegment) -> _Mechanism:
        if segment.sample_rate == 1.0:
            return cls(segment.noise_multiplier / math.sqrt(segment.steps), 1.0, 1)
        return cls(segment.noise_multiplier, segment.sample_rate, segment.steps)

    def loss_range(self) -> float:
        """Width of the privacy loss's support after dp-accounting's tail truncation (cheap)."""
        width = 0.0
        for adjacency in (
            privacy_loss_mechanism.AdjacencyType.REMOVE,
            privacy_loss_mechanism.AdjacencyType.ADD,
        ):
            loss = privacy_loss_mechanism.GaussianPrivacyLoss(
                self.sigma,
                sensitivity=1,
                pessimistic_estimate=True,
                log_mass_truncation_bound=_LOG_MASS_TRUNCATION,
                sampling_prob=self.q,
                adjacency_type=adjacency,
            )
            tail = loss.privacy_loss_tail()
            low = loss.privacy_loss(tail.upper_x_truncation)
            high = loss.privacy_loss(tail.lower_x_truncation)
            width = max(width, abs(float(high) - float(low)))
        return width

    def build(self, discretization: float) -> pld_lib.PrivacyLossDistribution:
        """The single-step PLD, exactly as dp-accounting's PLD accountant builds it."""
        return pld_lib.from_gaussian_mechanism(
            standard_deviation=self.sigma,
            value_discretization_interval=discretization,
            sampling_prob=self.q,
        )


def _composed_points(pld: pld_lib.PrivacyLossDistribution, count: int) -> int:
    """Points of ``pld`` self-composed ``count`` times, from the same Chernoff truncation bounds
    dp-accounting's FFT uses, computed before the FFT is allocated."""
    total = 0
    for pmf in (getattr(pld, "_pmf_remove", None), getattr(pld, "_pmf_add", None)):
        probs = getattr(pmf, "_probs", None)
        if probs is None:  # sparse (tiny) PMF, or an unknown dp-accounting layout
            size = int(getattr(pmf, "size", 0) or 0)
            total += size * count if count > 1 else size
            continue
        if count == 1:
            total += len(probs)
            continue
        lower, upper = pld_common.compute_self_convolve_bounds(probs, count, _TAIL_MASS_TRUNCATION)
        total += max(upper - lower + 1, len(probs))
    return total


def _pld_epsilon(
    mechanisms: Sequence[_Mechanism], delta: float, discretization: float
) -> tuple[float, float] | None:
    """PLD ε on ``discretization`` (or the composed size's coarsening of it); None if too big."""
    for _ in range(4):
        if discretization > _MAX_GRID:
            return None
        try:
            plds = [m.build(discretization) for m in mechanisms]
        except (OverflowError, FloatingPointError):
            return None
        points = sum(_composed_points(p, m.count) for p, m in zip(plds, mechanisms, strict=True))
        if points <= MAX_COMPOSED_POINTS:
            parts = [
                pld.self_compose(mech.count) if mech.count > 1 else pld
                for pld, mech in zip(plds, mechanisms, strict=True)
            ]
            composed = parts[0]
            for part in parts[1:]:
                composed = composed.compose(part)
            return float(composed.get_epsilon_for_delta(delta)), discretization
        discretization *= 2 * points / MAX_COMPOSED_POINTS
    return None


def estimate_epsilon(
    segments: Sequence[DpSegment],
    *,
    delta: float,
    accountant: str = "pld",
    pld_discretization: float = DEFAULT_PLD_DISCRETIZATION,
) -> EpsilonEstimate:
    """ε(δ) of the composition of ``segments``, in bounded time and memory, with how it was found.

    Raises:
        InvalidParameterError: δ or the accountant name is invalid.
    """
    check_delta(delta)
    check_accountant(accountant)
    if not segments:
        return EpsilonEstimate(0.0, accountant, None)
    if any(s.noise_multiplier == 0 for s in segments):
        return EpsilonEstimate(math.inf, accountant, None)
    if accountant == "rdp":
        return EpsilonEstimate(_rdp_epsilon(segments, delta), "rdp", None)
    mechanisms = [_Mechanism.of(s) for s in segments]
    widest = max(m.loss_range() for m in mechanisms)
    grid = max(pld_discretization, widest / MAX_PLD_POINTS)
    found = None
    if grid == pld_discretization:
        found = _pld_epsilon(mechanisms, delta, grid)
        if found is not None and found[1] == pld_discretization:
            return EpsilonEstimate(found[0], "pld", found[1])
    # The requested grid would exceed the size limits: RDP (cheap at any σ) and a coarser PLD are
    # both upper bounds, so the smaller one is too.
    rdp = _rdp_epsilon(segments, delta)
    compositions = sum(m.count for m in mechanisms)
    if found is None and grid * compositions < rdp:
        found = _pld_epsilon(mechanisms, delta, grid)
    if found is not None and found[0] < rdp:
        eps, grid = found
        note = (
            f"noise this small (or this many steps) makes the full-precision PLD too large to compute; "
            f"PLD on a grid of {grid:.3g} instead of {pld_discretization:g}: still an upper bound, "
            f"slightly looser than full precision (RDP gives {rdp:.6g})"
        )
        return EpsilonEstimate(eps, "pld-coarse", grid, note)
    note = (
        "noise this small (or this many steps) makes the full-precision PLD too large to compute; "
        "this is the RDP upper bound (looser than PLD)"
    )
    return EpsilonEstimate(rdp, "rdp", None, note)


def compute_epsilon(
    segments: Sequence[DpSegment],
    *,
    delta: float,
    accountant: str = "pld",
    pld_discretization: float = DEFAULT_PLD_DISCRETIZATION,
) -> float:
    """ε(δ) of the composition of ``segments``, always an upper bound, in bounded time and memory.

    Args:
        segments: the DP-SGD steps taken, in order; empty means nothing was released (ε = 0).
        delta: δ, the failure probability of the (ε, δ) guarantee, in (0, 1).
        accountant: "pld" (tight, default) or "rdp" (looser, cheaper upper bound).
        pld_discretization: PLD grid; larger is faster and over-states ε slightly (never under).
            Where this grid would need more than :data:`MAX_COMPOSED_POINTS` points (tiny σ, huge
            step counts) a coarser grid or the RDP bound is used; :func:`estimate_epsilon` says
            which.

    Returns:
        ε ≥ 0, or ``math.inf`` when a segment has σ = 0.

    Raises:
        InvalidParameterError: δ or the accountant name is invalid.
    """
    return estimate_epsilon(
        segments, delta=delta, accountant=accountant, pld_discretization=pld_discretization
    ).epsilon
