"""Tiny σ and huge step counts: ε stays an upper bound and is found in bounded memory.

The default PLD grid for σ = 0.05 at q = 1 over 100 steps (one Gaussian of σ 0.005) needs ~4·10⁸
points and grew past 16 GB; σ = 10⁻³ over 10⁶ steps asked numpy for 71 PiB. These tests pin the
size guard (no PLD larger than the limits is ever built, peak traced memory stays small) and that
each bounded answer still upper-bounds ε (above the Gaussian mechanism's exact ε where that is
known) and is never looser than dp-accounting's RDP bound.
"""

from __future__ import annotations

import math
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import dp_accounting
import pytest
from dp_accounting.pld import privacy_loss_distribution as pld_lib
from dp_accounting.pld import privacy_loss_mechanism
from dp_accounting.rdp import rdp_privacy_accountant

import privacy_finetuner.accounting.epsilon as epsilon_module
from privacy_finetuner.accounting import (
    DpSegment,
    calibrate_noise_multiplier,
    compute_epsilon,
    estimate_epsilon,
    max_steps_within_budget,
)

#: The issue's three commands (σ, q, steps); the last took 3.5 minutes.
EXTREME = [(0.05, 1.0, 100), (1e-3, 1.0, 1_000_000), (0.01, 0.01, 1), (0.01, 1.0, 1)]
#: Peak memory numpy may trace for one answer; the unbounded path needed tens of GB.
MEMORY_LIMIT = 600 * 2**20
DELTA = 1e-5


def _rdp(sigma: float, q: float, steps: int) -> float:
    mech: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(sigma)
    if q < 1:
        mech = dp_accounting.PoissonSampledDpEvent(q, mech)
    acct = rdp_privacy_accountant.RdpAccountant()
    return float(acct.compose(dp_accounting.SelfComposedDpEvent(mech, steps)).get_epsilon(DELTA))


def _sizes(pld: Any) -> list[int]:
    return [int(pmf.size) for pmf in (pld._pmf_remove, pld._pmf_add) if pmf is not None]


@pytest.fixture
def pld_sizes(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[int]]]:
    """Record the size of every PLD the estimator builds: single steps and their compositions."""
    sizes: dict[str, list[int]] = {"single": [], "composed": []}
    build: Callable[..., Any] = pld_lib.from_gaussian_mechanism
    self_compose: Callable[..., Any] = pld_lib.PrivacyLossDistribution.self_compose

    def recording_build(*args: Any, **kwargs: Any) -> Any:
        pld = build(*args, **kwargs)
        sizes["single"].extend(_sizes(pld))
        return pld

    def recording_compose(self: Any, *args: Any, **kwargs: Any) -> Any:
        pld = self_compose(self, *args, **kwargs)
        sizes["composed"].append(sum(_sizes(pld)))
        return pld

    monkeypatch.setattr(pld_lib, "from_gaussian_mechanism", recording_build)
    monkeypatch.setattr(pld_lib.PrivacyLossDistribution, "self_compose", recording_compose)
    yield sizes


def _within_limits(sizes: dict[str, list[int]]) -> bool:
    return all(n <= epsilon_module.MAX_PLD_POINTS * 1.01 for n in sizes["single"]) and all(
        n <= epsilon_module.MAX_COMPOSED_POINTS for n in sizes["composed"]
    )


@pytest.mark.parametrize(("sigma", "q", "steps"), EXTREME)
def test_extreme_inputs_are_bounded_and_upper_bounds(
    sigma: float, q: float, steps: int, pld_sizes: dict[str, list[int]]
) -> None:
    # tracemalloc sees numpy's buffers; it slows the subsampled build ~8x, so only where cheap.
    traced = q == 1.0
    if traced:
        tracemalloc.start()
    try:
        found = estimate_epsilon([DpSegment(sigma, q, steps)], delta=DELTA)
        peak = tracemalloc.get_traced_memory()[1] if traced else 0
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT
    assert _within_limits(pld_sizes)
    assert found.method in {"pld-coarse", "rdp"}
    assert found.note is not None and "upper bound" in found.note
    rdp = _rdp(sigma, q, steps)
    assert found.epsilon <= rdp * (1 + 1e-12)
    assert math.isfinite(found.epsilon) and found.epsilon > 0
    if q == 1.0:
        # steps Gaussian releases at σ are one Gaussian release at σ/√steps, whose δ(ε) is exact.
        exact = privacy_loss_mechanism.GaussianPrivacyLoss(sigma / math.sqrt(steps), sensitivity=1)
        assert exact.get_delta_for_epsilon(found.epsilon) <= DELTA * (1 + 1e-6)
        if found.method == "pld-coarse":
            # ...and still tight: within 0.1% of the exact ε, where RDP is several % above it.
            assert exact.get_delta_for_epsilon(found.epsilon * (1 - 1e-3)) >= DELTA


def test_compute_epsilon_takes_the_same_bounded_path() -> None:
    segment = [DpSegment(0.05, 1.0, 100)]
    found = estimate_epsilon(segment, delta=DELTA)
    assert compute_epsilon(segment, delta=DELTA) == found.epsilon


def test_ordinary_inputs_keep_the_full_precision_grid(pld_sizes: dict[str, list[int]]) -> None:
    found = estimate_epsilon([DpSegment(1.0, 0.01, 1000)], delta=DELTA)
    assert found.method == "pld"
    assert found.discretization == epsilon_module.DEFAULT_PLD_DISCRETIZATION
    assert found.note is None
    assert pld_sizes["single"] and _within_limits(pld_sizes)


def test_coarse_grid_stays_close_above_the_fine_grid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    segment = [DpSegment(1.0, 0.01, 1000)]
    fine = compute_epsilon(segment, delta=DELTA)
    monkeypatch.setattr(epsilon_module, "MAX_PLD_POINTS", 5_000)
    coarse = estimate_epsilon(segment, delta=DELTA)
    assert coarse.method == "pld-coarse"
    assert coarse.discretization is not None and coarse.discretization > 1e-4
    # Pessimistic on both grids: the coarse value is above the fine one, and close to it.
    assert fine <= coarse.epsilon <= fine * 1.02
    assert coarse.epsilon <= _rdp(1.0, 0.01, 1000)


def test_composed_size_guard_coarsens_before_the_fft(monkeypatch: pytest.MonkeyPatch) -> None:
    segment = [DpSegment(1.0, 0.01, 1000)]
    fine = compute_epsilon(segment, delta=DELTA)
    monkeypatch.setattr(epsilon_module, "MAX_COMPOSED_POINTS", 50_000)
    found = estimate_epsilon(segment, delta=DELTA)
    assert found.method == "pld-coarse"
    assert fine <= found.epsilon <= fine * 1.02


def test_calibration_and_budget_search_are_bounded(pld_sizes: dict[str, list[int]]) -> None:
    loose = calibrate_noise_multiplier(
        target_epsilon=5_000, delta=DELTA, sample_rate=1.0, steps=100, rtol=1e-2
    )
    steps = max_steps_within_budget(
        target_epsilon=50, delta=DELTA, noise_multiplier=0.05, sample_rate=1.0
    )
    assert _within_limits(pld_sizes)
    assert loose.epsilon <= 5_000
    assert compute_epsilon([DpSegment(loose.noise_multiplier, 1.0, 100)], delta=DELTA) <= 5_000
    # σ 0.05 at q = 1 spends ε ≈ 2·10³ in one step already: no step fits a budget of 50.
    assert steps == 0
