"""Calibration: round trip, minimality, and the budget-stop helper."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy_finetuner.accounting import (
    DpSegment,
    calibrate_noise_multiplier,
    compute_epsilon,
    max_steps_within_budget,
)
from privacy_finetuner.errors import InvalidParameterError


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
@pytest.mark.parametrize(
    ("target", "q", "steps"), [(3.0, 0.01, 1000), (8.0, 0.05, 300), (1.0, 0.002, 2000)]
)
def test_round_trip_and_minimality(accountant: str, target: float, q: float, steps: int) -> None:
    result = calibrate_noise_multiplier(
        target_epsilon=target, delta=1e-5, sample_rate=q, steps=steps, accountant=accountant
    )
    eps = compute_epsilon(
        [DpSegment(result.noise_multiplier, q, steps)], delta=1e-5, accountant=accountant
    )
    assert eps == pytest.approx(result.epsilon, rel=1e-12)
    assert eps <= target
    # Minimal to 1e-3 relative: 0.1% less noise already overspends.
    smaller = compute_epsilon(
        [DpSegment(result.noise_multiplier * (1 - 1e-3), q, steps)],
        delta=1e-5,
        accountant=accountant,
    )
    assert smaller > target


@settings(max_examples=6, deadline=None)
@given(target=st.floats(0.5, 10.0), q=st.floats(0.001, 0.2), steps=st.integers(10, 500))
def test_round_trip_property_rdp(target: float, q: float, steps: int) -> None:
    result = calibrate_noise_multiplier(
        target_epsilon=target, delta=1e-5, sample_rate=q, steps=steps, accountant="rdp"
    )
    assert result.epsilon <= target
    assert result.noise_multiplier > 0


def test_rejects_bad_target() -> None:
    with pytest.raises(InvalidParameterError, match="target epsilon"):
        calibrate_noise_multiplier(target_epsilon=0, delta=1e-5, sample_rate=0.01, steps=10)


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_max_steps_within_budget_is_tight(accountant: str) -> None:
    sigma, q, target = 1.0, 0.02, 2.0
    n = max_steps_within_budget(
        target_epsilon=target,
        delta=1e-5,
        noise_multiplier=sigma,
        sample_rate=q,
        accountant=accountant,
    )
    assert n > 0
    assert compute_epsilon([DpSegment(sigma, q, n)], delta=1e-5, accountant=accountant) <= target
    assert compute_epsilon([DpSegment(sigma, q, n + 1)], delta=1e-5, accountant=accountant) > target


def test_max_steps_counts_prior_spending() -> None:
    prior = (DpSegment(1.0, 0.02, 100),)
    fresh = max_steps_within_budget(
        target_epsilon=2.0, delta=1e-5, noise_multiplier=1.0, sample_rate=0.02, accountant="rdp"
    )
    after = max_steps_within_budget(
        target_epsilon=2.0,
        delta=1e-5,
        noise_multiplier=1.0,
        sample_rate=0.02,
        prior=prior,
        accountant="rdp",
    )
    assert after == fresh - 100
