"""The audit's pure math against brute force, closed forms and Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from privacy_finetuner.audit.exposure import (
    extrapolated_exposure,
    fit_skew_normal,
    rank_exposure,
)
from privacy_finetuner.audit.mia import (
    evaluate_attack,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
    zlib_calibrated_scores,
)
from privacy_finetuner.audit.one_run import (
    default_guess_grid,
    epsilon_lower_bound,
    one_run_lower_bound,
    one_run_p_value,
)
from privacy_finetuner.errors import InvalidParameterError

small_floats = st.floats(-5, 5, allow_nan=False).map(lambda x: round(x, 1))  # forces ties


# -- exposure ---------------------------------------------------------------------------------
@given(
    canaries=st.lists(small_floats, min_size=1, max_size=5),
    candidates=st.lists(small_floats, min_size=1, max_size=40),
)
def test_rank_exposure_matches_brute_force(canaries: list[float], candidates: list[float]) -> None:
    got = rank_exposure(canaries, candidates)
    n = len(candidates)
    for c, e in zip(canaries, got, strict=True):
        rank = 1 + sum(x < c for x in candidates) + 0.5 * sum(x == c for x in candidates)
        assert e == pytest.approx(math.log2((n + 1) / rank))
        assert 0 <= e <= math.log2(n + 1) + 1e-12


def test_rank_exposure_extremes() -> None:
    candidates = np.arange(10_000, dtype=float)
    best, worst = rank_exposure([-1.0, 1e9], candidates)
    assert best == pytest.approx(math.log2(10_001))
    assert worst == pytest.approx(0.0, abs=1e-3)


def test_random_canary_has_about_one_bit_of_exposure() -> None:
    rng = np.random.default_rng(0)
    candidates = rng.normal(size=10_000)
    canaries = rng.normal(size=2_000)  # drawn like the candidates: not memorised
    exposure = rank_exposure(canaries, candidates)
    # E[-log2 U] = 1/ln 2 ≈ 1.44 for uniform U; the median is 1 bit.
    assert np.median(exposure) == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("shape", [0.0, 4.0, -3.0])
def test_extrapolation_recovers_tail_probability(shape: float) -> None:
    rng = np.random.default_rng(1)
    dist = stats.skewnorm(shape, loc=30.0, scale=2.0)
    candidates = dist.rvs(size=10_000, random_state=rng)
    fit = fit_skew_normal(candidates)
    for p in (1e-2, 1e-6, 1e-9):
        x = dist.ppf(p)
        bits = extrapolated_exposure([x], candidates, space_size=1e12, fit=fit)[0]
        assert bits == pytest.approx(-math.log2(p), rel=0.25)


def test_extrapolation_agrees_with_rank_inside_the_sample() -> None:
    rng = np.random.default_rng(2)
    candidates = rng.normal(10.0, 1.0, size=20_000)
    canaries = np.array([10.0, 8.5, 7.5])
    by_rank = rank_exposure(canaries, candidates)
    by_fit = extrapolated_exposure(canaries, candidates, space_size=1e12)
    np.testing.assert_allclose(by_fit, by_rank, atol=0.3)


def test_extrapolation_is_capped_by_the_space() -> None:
    candidates = np.random.default_rng(3).normal(size=1000)
    bits = extrapolated_exposure([-100.0], candidates, space_size=1e6)
    assert bits[0] == pytest.approx(math.log2(1e6))


def test_exposure_rejects_bad_input() -> None:
    with pytest.raises(InvalidParameterError):
        rank_exposure([], [1.0])
    with pytest.raises(InvalidParameterError):
        rank_exposure([float("nan")], [1.0])
    with pytest.raises(InvalidParameterError):
        extrapolated_exposure([1.0], [1.0, 2.0], space_size=1)


# -- one-run audit ----------------------------------------------------------------------------
def _p_value_brute(m: int, r: int, v: int, eps: float, delta: float) -> float:
    q = math.exp(eps) / (1 + math.exp(eps))
    pmf = [math.comb(r, j) * q**j * (1 - q) ** (r - j) for j in range(r + 1)]
    beta = sum(pmf[v:])
    alpha = max((sum(pmf[v - i : v]) / i for i in range(1, v + 1)), default=0.0)
    return min(1.0, beta + 2 * m * delta * alpha)


@settings(max_examples=60, deadline=None)
@given(
    r=st.integers(1, 40),
    frac=st.floats(0, 1),
    eps=st.floats(0, 6),
    delta=st.sampled_from([0.0, 1e-5, 1e-3]),
)
def test_p_value_matches_brute_force(r: int, frac: float, eps: float, delta: float) -> None:
    v = round(frac * r)
    m = 2 * r
    got = one_run_p_value(m=m, guesses=r, correct=v, epsilon=eps, delta=delta)
    assert got == pytest.approx(_p_value_brute(m, r, v, eps, delta), rel=1e-9, abs=1e-12)


def test_p_value_monte_carlo_for_randomized_response() -> None:
    # An ε-DP randomised response on each inclusion bit: every guess is right w.p. q exactly.
    rng = np.random.default_rng(4)
    eps, r, v = 1.0, 30, 24
    q = math.exp(eps) / (1 + math.exp(eps))
    wins = rng.binomial(r, q, size=200_000)
    empirical = float(np.mean(wins >= v))
    exact = one_run_p_value(m=r, guesses=r, correct=v, epsilon=eps, delta=0.0)
    assert empirical == pytest.approx(exact, rel=0.05)


def test_epsilon_lower_bound_inverts_p_value() -> None:
    eps = epsilon_lower_bound(m=200, guesses=100, correct=90, delta=1e-5)
    assert eps > 0
    p_at = one_run_p_value(m=200, guesses=100, correct=90, epsilon=eps, delta=1e-5)
    p_above = one_run_p_value(m=200, guesses=100, correct=90, epsilon=eps + 1e-3, delta=1e-5)
    assert p_at < 0.05 <= p_above


def test_chance_level_guesses_give_zero() -> None:
    assert epsilon_lower_bound(m=100, guesses=50, correct=25, delta=1e-5) == 0.0
    assert epsilon_lower_bound(m=100, guesses=0, correct=0, delta=0.0) == 0.0


def _randomized_response_scores(
    rng: np.random.Generator, m: int, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    included = rng.random(m) < 0.5
    keep = rng.random(m) < math.exp(eps) / (1 + math.exp(eps))
    reported = np.where(keep, included, ~included)
    return reported + 1e-3 * rng.random(m), included


def test_audit_is_sound_for_a_mechanism_with_known_epsilon() -> None:
    """An ε-DP mechanism (randomised response) must give ε_lower ≤ ε in ≥ 95 % of runs."""
    rng = np.random.default_rng(5)
    eps = 2.0
    bounds = []
    for _ in range(60):
        scores, included = _randomized_response_scores(rng, 300, eps)
        bounds.append(one_run_lower_bound(scores, included, delta=0.0).epsilon_lower)
    arr = np.array(bounds)
    assert np.mean(arr > eps) <= 0.05
    assert np.median(arr) > 0.5  # and the audit is not vacuous: it finds a good part of ε


def test_audit_is_sound_for_the_gaussian_mechanism() -> None:
    """Score = inclusion bit · μ + N(0, 1) is μ-GDP; its (ε, δ) curve is known in closed form."""
    mu, delta = 2.0, 1e-5

    def gdp_delta(eps: float) -> float:
        return float(
            stats.norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * stats.norm.cdf(-eps / mu - mu / 2)
        )

    lo, hi = 0.0, 50.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if gdp_delta(mid) > delta else (lo, mid)
    eps_true = hi
    rng = np.random.default_rng(6)
    over = 0
    for _ in range(30):
        included = rng.random(600) < 0.5
        scores = included * mu + rng.normal(size=600)
        over += one_run_lower_bound(scores, included, delta=delta).epsilon_lower > eps_true
    assert over <= 2


def test_perfectly_separable_scores_give_a_large_bound() -> None:
    rng = np.random.default_rng(7)
    included = rng.random(1000) < 0.5
    bound = one_run_lower_bound(included.astype(float), included, delta=1e-5)
    assert bound.epsilon_lower > 4.0
    assert bound.correct == bound.guesses
    assert bound.to_dict()["guesses"] == bound.k_plus + bound.k_minus


def test_guess_grid_and_input_checks() -> None:
    grid = default_guess_grid(100)
    assert (50, 50) in grid and (1, 0) in grid
    assert all(kp + km <= 100 for kp, km in grid)
    with pytest.raises(InvalidParameterError):
        one_run_lower_bound([1.0, 2.0], [True], delta=0.0)
    with pytest.raises(InvalidParameterError):
        one_run_p_value(m=1, guesses=2, correct=1, epsilon=1.0, delta=0.0)


# -- membership inference ---------------------------------------------------------------------
@given(
    pos=st.lists(small_floats, min_size=1, max_size=30),
    neg=st.lists(small_floats, min_size=1, max_size=30),
)
def test_auc_matches_all_pairs(pos: list[float], neg: list[float]) -> None:
    pairs = [1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg]
    scores = pos + neg
    members = [True] * len(pos) + [False] * len(neg)
    assert roc_auc(scores, members) == pytest.approx(sum(pairs) / len(pairs))
    # The area under the (step-interpolated with ties as diagonals) ROC curve is the same.
    fpr, tpr = roc_curve(scores, members)
    assert np.trapezoid(tpr, fpr) == pytest.approx(sum(pairs) / len(pairs))
    assert fpr[0] == tpr[0] == 0.0 and fpr[-1] == tpr[-1] == 1.0


@given(
    pos=st.lists(small_floats, min_size=1, max_size=30),
    neg=st.lists(small_floats, min_size=1, max_size=30),
    target=st.sampled_from([0.0, 0.01, 0.1, 0.5]),
)
def test_tpr_at_fpr_matches_brute_force(pos: list[float], neg: list[float], target: float) -> None:
    best = 0.0
    for t in set(pos + neg) | {math.inf}:
        fpr = sum(n >= t for n in neg) / len(neg)
        if fpr <= target:
            best = max(best, sum(p >= t for p in pos) / len(pos))
    members = [True] * len(pos) + [False] * len(neg)
    assert tpr_at_fpr(pos + neg, members, fpr=target) == pytest.approx(best)


def test_attack_summary_and_calibration() -> None:
    rng = np.random.default_rng(8)
    members = rng.random(500) < 0.5
    scores = members * 3.0 + rng.normal(size=500)
    result = evaluate_attack("loss", scores, members, max_points=50)
    assert 0.95 < result.auc <= 1.0
    assert len(result.fpr) <= 50 and result.to_dict()["roc"]["tpr"][-1] == 1.0
    # zlib calibration: the same loss on a repetitive text is less surprising.
    calibrated = zlib_calibrated_scores([10.0, 10.0], ["aaaaaaaaaaaaaaaa", "q7#Lx!2mZ@p9&Rt%"])
    assert calibrated[0] < calibrated[1]
    with pytest.raises(InvalidParameterError):
        roc_auc([1.0, 2.0], [True, True])
