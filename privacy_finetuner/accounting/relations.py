"""ε under a named neighbouring relation, for the statement of what a released run protects.

A DP-SGD run publishes N (the number of privacy units), q = B/N and the step count, so the
relation that matches the release is *zero-out*: one unit's data is replaced by a null unit that
contributes a zero gradient, N unchanged (dp-accounting's ``REPLACE_SPECIAL``). For the
Poisson-subsampled Gaussian it gives the same ε as add/remove-one, which is what the planner and
the engine compute. *Replace-one* (one unit's data swapped for arbitrary other data) is stronger
and costs more ε; it is only supported by the PLD accountant of dp-accounting for Poisson
sampling, so it is always computed with PLD here.

:func:`gaussian_noise_for_epsilon` calibrates the one Gaussian mechanism of the DP validation
estimate (see :mod:`privacy_finetuner.training.dp_validation`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import dp_accounting
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from privacy_finetuner.accounting._validation import check_accountant, check_delta
from privacy_finetuner.accounting.epsilon import DpSegment, segments_to_event
from privacy_finetuner.errors import InvalidParameterError

__all__ = [
    "RELATIONS",
    "Relation",
    "dp_accounting_name",
    "epsilon_under_relation",
    "gaussian_noise_for_epsilon",
]

Relation = Literal["zero_out", "add_remove", "replace_one"]

#: Our names → dp-accounting's ``NeighboringRelation``.
RELATIONS: dict[str, dp_accounting.NeighboringRelation] = {
    "zero_out": dp_accounting.NeighboringRelation.REPLACE_SPECIAL,
    "add_remove": dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
    "replace_one": dp_accounting.NeighboringRelation.REPLACE_ONE,
}


def dp_accounting_name(relation: str) -> str:
    """dp-accounting's name of ``relation`` (e.g. "REPLACE_SPECIAL" for zero-out)."""
    if relation not in RELATIONS:
        raise InvalidParameterError(
            f"unknown neighbouring relation {relation!r}; use one of {', '.join(RELATIONS)}"
        )
    return str(RELATIONS[relation].name)


def epsilon_under_relation(
    segments: Sequence[DpSegment],
    *,
    delta: float,
    relation: str,
    accountant: str = "pld",
    pld_discretization: float = 1e-4,
) -> float:
    """ε(δ) of the composed Poisson-subsampled Gaussian ``segments`` under ``relation``.

    ``replace_one`` always uses PLD (dp-accounting's RDP accountant does not support it for
    Poisson sampling); the other relations use ``accountant``.

    Raises:
        InvalidParameterError: bad δ, accountant or relation name.
    """
    check_delta(delta)
    check_accountant(accountant)
    rel = RELATIONS.get(relation)
    if rel is None:
        raise InvalidParameterError(
            f"unknown neighbouring relation {relation!r}; use one of {', '.join(RELATIONS)}"
        )
    if not segments:
        return 0.0
    if any(s.noise_multiplier == 0 for s in segments):
        return math.inf
    acct: dp_accounting.PrivacyAccountant
    if accountant == "pld" or relation == "replace_one":
        acct = pld_privacy_accountant.PLDAccountant(
            neighboring_relation=rel, value_discretization_interval=pld_discretization
        )
    else:
        acct = rdp_privacy_accountant.RdpAccountant(neighboring_relation=rel)
    acct.compose(segments_to_event(segments))
    return float(acct.get_epsilon(target_delta=delta))


def _gaussian_delta(sigma: float, epsilon: float) -> float:
    """δ(ε) of the Gaussian mechanism with sensitivity 1 and noise σ, exactly (Balle & Wang
    2018, "Improving the Gaussian mechanism", Theorem 8)."""

    def phi(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2.0))

    a, b = 1.0 / (2.0 * sigma), epsilon * sigma
    return phi(a - b) - math.exp(epsilon) * phi(-a - b)


def gaussian_noise_for_epsilon(epsilon: float, *, delta: float) -> float:
    """The smallest σ (to 0.01 %) for which one Gaussian mechanism of sensitivity 1 and noise
    σ is (``epsilon``, ``delta``)-DP: the exact analytic bound, which dp-accounting's PLD
    matches for a single Gaussian (add/remove and zero-out agree for it).

    Raises:
        InvalidParameterError: ε not positive and finite, or a bad δ.
    """
    check_delta(delta)
    if not (0 < epsilon < math.inf):
        raise InvalidParameterError(f"epsilon must be positive and finite, got {epsilon}")
    lo, hi = 1e-3, 1.0
    while _gaussian_delta(hi, epsilon) > delta:
        lo, hi = hi, hi * 2
    while hi - lo > 1e-4 * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _gaussian_delta(mid, epsilon) > delta else (lo, mid)
    return hi
