"""The DP-SGD schedule of a job: σ, q and steps from its config and the number of privacy units.

Torch-free on purpose: the trainer plans with it before it builds a run directory, and the service
plans with it at submission to reserve the ledger budget, so both always agree on the same formulas.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

from privacy_finetuner.accounting import (
    DpSegment,
    calibrate_noise_multiplier,
    check_delta,
    compute_epsilon,
    max_steps_within_budget,
)
from privacy_finetuner.config.schema import JobConfig
from privacy_finetuner.errors import CalibrationError, PrivacyWarning

__all__ = ["Plan", "plan_privacy"]


@dataclass(frozen=True)
class Plan:
    """The DP-SGD schedule: σ, q, steps, and (on demand) the ε it will spend."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    accountant: str
    warnings: list[str]

    @functools.cached_property
    def expected_epsilon(self) -> float:
        """ε(δ) of the whole schedule; computed when asked, because a precise PLD costs ~0.3 s
        and the service's admission path (which has its own, memoised, ledger ε) never asks."""
        segment = DpSegment(
            noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate, steps=self.steps
        )
        return compute_epsilon([segment], delta=self.delta, accountant=self.accountant)


def plan_privacy(config: JobConfig, *, num_units: int) -> Plan:
    """σ for the target ε over the planned steps (or the steps a fixed σ can afford).

    Raises:
        CalibrationError: the target ε cannot be met with this data size, batch and steps.
    """
    privacy, training = config.privacy, config.training
    q = min(1.0, training.batch_size / num_units)
    if training.max_steps is not None:
        steps = training.max_steps
    else:
        steps = max(1, math.ceil((training.epochs or 1.0) / q))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PrivacyWarning)
        check_delta(privacy.delta, dataset_size=num_units)
    notes = [str(w.message) for w in caught]
    for note in notes:
        # Recorded for the report above; raised again so the console (and a caller's warning
        # filters) see it too: a δ this large voids the guarantee the run will claim.
        warnings.warn(note, PrivacyWarning, stacklevel=2)
    where = f"n={num_units} {privacy.privacy_unit}s, batch {training.batch_size} (q={q:.4g})"
    if privacy.noise_multiplier is not None:
        sigma = privacy.noise_multiplier
        if privacy.target_epsilon is not None:
            affordable = max_steps_within_budget(
                target_epsilon=privacy.target_epsilon,
                delta=privacy.delta,
                noise_multiplier=sigma,
                sample_rate=q,
                accountant=privacy.accountant,
                limit=steps,
            )
            if affordable == 0:
                raise CalibrationError(
                    f"target epsilon {privacy.target_epsilon:g} is unreachable: a single step at "
                    f"noise multiplier {sigma:g} with {where} already exceeds it"
                )
            if affordable < steps:
                notes.append(f"the budget allows {affordable} of the {steps} planned steps")
                steps = affordable
    else:
        try:
            sigma = calibrate_noise_multiplier(
                target_epsilon=privacy.target_epsilon or 0.0,
                delta=privacy.delta,
                sample_rate=q,
                steps=steps,
                accountant=privacy.accountant,
                rtol=1e-3,
            ).noise_multiplier
        except CalibrationError:
            raise CalibrationError(
                f"target epsilon {privacy.target_epsilon:g} is unreachable with {where} and "
                f"{steps} steps: raise the target, use fewer steps or more data"
            ) from None
    return Plan(sigma, q, steps, privacy.delta, privacy.accountant, notes)
