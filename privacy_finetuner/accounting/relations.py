"""ε under a named neighbouring relation, for the statement of what a released run protects.

A DP-SGD run publishes N (the number of privacy units), q = B/N and the step count, so the
relation that matches the release is *zero-out*: one unit's data is replaced by a null unit that
contributes a zero gradient, N unchanged (dp-accounting's ``REPLACE_SPECIAL``). For the
Poisson-subsampled Gaussian it gives the same ε as add/remove-one, which is what the planner and
the engine compute. *Replace-one* (one unit's data swapped for arbitrary other data) is stronger
and costs more ε; it is only supported by the PLD accountant of dp-accounting for Poisson
sampling, so it is always computed with PLD here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import dp_accounting
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from privacy_finetuner.accounting._validation import check_accountant, check_delta
from privacy_finetuner.accounting.epsilon import DpSegment, segments_to_event
from privacy_finetuner.errors import InvalidParameterError

__all__ = ["RELATIONS", "Relation", "dp_accounting_name", "epsilon_under_relation"]

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
        return float("inf")
    acct: dp_accounting.PrivacyAccountant
    if accountant == "pld" or relation == "replace_one":
        acct = pld_privacy_accountant.PLDAccountant(
            neighboring_relation=rel, value_discretization_interval=pld_discretization
        )
    else:
        acct = rdp_privacy_accountant.RdpAccountant(neighboring_relation=rel)
    acct.compose(segments_to_event(segments))
    return float(acct.get_epsilon(target_delta=delta))
