"""ε of DP-SGD with Poisson sampling, computed by Google's dp-accounting.

A run (or a ledger of runs) is a list of :class:`DpSegment`: stretches of steps that share one
noise multiplier σ and one sample rate q. Each step is the subsampled Gaussian mechanism
``PoissonSampledDpEvent(q, GaussianDpEvent(σ))``; segments compose. We only translate segments into
dp-accounting events and ask its PLD or RDP accountant; the mathematics is theirs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dp_accounting
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from privacy_finetuner.accounting._validation import (
    check_accountant,
    check_delta,
    check_noise_multiplier,
    check_sample_rate,
    check_steps,
)

__all__ = ["DEFAULT_PLD_DISCRETIZATION", "DpSegment", "compute_epsilon", "segments_to_event"]

#: dp-accounting's default PLD grid; pessimistic, so a coarser grid only over-states ε.
DEFAULT_PLD_DISCRETIZATION = 1e-4


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


def _make_accountant(accountant: str, pld_discretization: float) -> dp_accounting.PrivacyAccountant:
    if accountant == "pld":
        return pld_privacy_accountant.PLDAccountant(
            value_discretization_interval=pld_discretization
        )
    return rdp_privacy_accountant.RdpAccountant()


def compute_epsilon(
    segments: Sequence[DpSegment],
    *,
    delta: float,
    accountant: str = "pld",
    pld_discretization: float = DEFAULT_PLD_DISCRETIZATION,
) -> float:
    """ε(δ) of the composition of ``segments``.

    Args:
        segments: the DP-SGD steps taken, in order; empty means nothing was released (ε = 0).
        delta: δ, the failure probability of the (ε, δ) guarantee, in (0, 1).
        accountant: "pld" (tight, default) or "rdp" (looser, cheaper upper bound).
        pld_discretization: PLD grid; larger is faster and over-states ε slightly (never under).

    Returns:
        ε ≥ 0, or ``math.inf`` when a segment has σ = 0.

    Raises:
        InvalidParameterError: δ or the accountant name is invalid.
    """
    check_delta(delta)
    check_accountant(accountant)
    if not segments:
        return 0.0
    if any(s.noise_multiplier == 0 for s in segments):
        return math.inf
    acct = _make_accountant(accountant, pld_discretization)
    acct.compose(segments_to_event(segments))
    return float(acct.get_epsilon(target_delta=delta))
