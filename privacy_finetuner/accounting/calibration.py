"""The smallest noise multiplier σ that keeps DP-SGD within a target (ε, δ).

ε is decreasing in σ, so this is a root search. A full-precision PLD evaluation costs about a
second for 10⁴ steps, so we bracket and bisect on a coarse PLD grid (pessimistic: its ε is an upper
bound, so every σ it accepts is valid) and then tighten only the last percent at full precision,
by interpolation (about four full evaluations instead of a dozen bisection steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from privacy_finetuner.accounting._validation import (
    check_accountant,
    check_delta,
    check_epsilon,
    check_sample_rate,
    check_steps,
)
from privacy_finetuner.accounting.epsilon import (
    DEFAULT_PLD_DISCRETIZATION,
    DpSegment,
    compute_epsilon,
)
from privacy_finetuner.errors import CalibrationError

__all__ = ["Calibration", "calibrate_noise_multiplier", "max_steps_within_budget"]

_COARSE_PLD_DISCRETIZATION = 1e-3
_SIGMA_MIN = 1e-2
_SIGMA_MAX = 1e4
#: The coarse search only has to land near the root; the full-precision search finishes it.
_COARSE_RTOL = 1e-3
_FINE_WINDOW = 0.01


@dataclass(frozen=True)
class Calibration:
    """Result of a calibration: σ and the ε it actually gives (≤ the target)."""

    noise_multiplier: float
    epsilon: float


def _epsilon_fn(
    *, delta: float, sample_rate: float, steps: int, accountant: str, discretization: float
) -> Callable[[float], float]:
    cache: dict[float, float] = {}

    def epsilon(sigma: float) -> float:
        if sigma not in cache:
            segment = DpSegment(noise_multiplier=sigma, sample_rate=sample_rate, steps=steps)
            cache[sigma] = compute_epsilon(
                [segment], delta=delta, accountant=accountant, pld_discretization=discretization
            )
        return cache[sigma]

    return epsilon


def _refine(
    epsilon: Callable[[float], float], target: float, low: float, high: float, rtol: float
) -> float:
    """Shrink [low, high] (ε(low) > target ≥ ε(high)) to ``rtol``; return the valid end.

    log ε is close to linear in log σ over a few percent, so interpolation predicts the root; we
    then probe just above and just below it, which usually closes the bracket to ``rtol`` in two
    evaluations. A probe that does not at least halve the bracket is followed by a bisection step,
    so the worst case stays logarithmic. The answer is always a σ whose ε was checked ≤ target.
    """
    log_target = math.log(target)
    while high / low - 1 > rtol:
        f_low = math.log(epsilon(low)) - log_target
        f_high = math.log(max(epsilon(high), 1e-300)) - log_target
        width = math.log(high / low)
        share = f_low / (f_low - f_high) if f_low > f_high else 0.5
        guess = math.exp(math.log(low) + width * min(max(share, 0.0), 1.0))
        before = width
        for probe in (guess * (1 + rtol / 3), guess * (1 - rtol / 3)):
            if not low < probe < high:
                continue
            if epsilon(probe) <= target:
                high = probe
            else:
                low = probe
        if high / low - 1 > rtol and math.log(high / low) > before / 2:
            mid = math.sqrt(low * high)
            if epsilon(mid) <= target:
                high = mid
            else:
                low = mid
    return high


def _bracket(epsilon: Callable[[float], float], target: float) -> tuple[float, float]:
    high = 1.0
    while epsilon(high) > target:
        high *= 2
        if high > _SIGMA_MAX:
            raise CalibrationError(
                f"no noise multiplier up to {_SIGMA_MAX:g} reaches epsilon={target:g}"
            )
    low = high / 2
    while epsilon(low) <= target:
        if low < _SIGMA_MIN:
            return low, low
        high = low
        low /= 2
    return low, high


def calibrate_noise_multiplier(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "pld",
    rtol: float = 1e-4,
) -> Calibration:
    """Smallest σ (to relative tolerance ``rtol``) with ε(σ; q, steps, δ) ≤ ``target_epsilon``.

    Args:
        target_epsilon: ε the run may spend in total.
        delta: δ of the guarantee.
        sample_rate: q, Poisson inclusion probability per logical step.
        steps: number of logical steps the run will take.
        accountant: "pld" or "rdp".
        rtol: relative precision of σ; the answer is never below the true minimum.

    Raises:
        InvalidParameterError: an argument is out of range.
        CalibrationError: no σ up to 10⁴ reaches the target.
    """
    check_epsilon(target_epsilon)
    check_delta(delta)
    check_sample_rate(sample_rate)
    check_steps(steps)
    check_accountant(accountant)
    common = {"delta": delta, "sample_rate": sample_rate, "steps": steps, "accountant": accountant}
    fine = _epsilon_fn(discretization=DEFAULT_PLD_DISCRETIZATION, **common)  # type: ignore[arg-type]
    if accountant == "rdp":
        low, high = _bracket(fine, target_epsilon)
        sigma = high if low == high else _refine(fine, target_epsilon, low, high, rtol)
        return Calibration(noise_multiplier=sigma, epsilon=fine(sigma))
    coarse = _epsilon_fn(discretization=_COARSE_PLD_DISCRETIZATION, **common)  # type: ignore[arg-type]
    low, high = _bracket(coarse, target_epsilon)
    if low == high:
        return Calibration(noise_multiplier=high, epsilon=fine(high))
    high = _refine(coarse, target_epsilon, low, high, max(rtol, _COARSE_RTOL))
    # The coarse grid over-states ε, so the true minimum lies a little below ``high``.
    low = high * (1 - _FINE_WINDOW)
    while fine(low) <= target_epsilon:
        high, low = low, low * (1 - _FINE_WINDOW)
    sigma = _refine(fine, target_epsilon, low, high, rtol)
    return Calibration(noise_multiplier=sigma, epsilon=fine(sigma))


def _largest_true(predicate: Callable[[int], bool], start: int, limit: int) -> int:
    """Largest n in [start, limit] with predicate(n), given predicate(start) (monotone: true, then false)."""
    low, step = start, 1
    while low + step <= limit and predicate(low + step):
        low, step = low + step, step * 2
    high = min(low + step, limit + 1)
    while high - low > 1:
        mid = (low + high) // 2
        if predicate(mid):
            low = mid
        else:
            high = mid
    return low


def max_steps_within_budget(
    *,
    target_epsilon: float,
    delta: float,
    noise_multiplier: float,
    sample_rate: float,
    prior: tuple[DpSegment, ...] = (),
    accountant: str = "pld",
    limit: int = 10_000_000,
) -> int:
    """Largest number of further steps at (σ, q) that keeps the total ε ≤ ``target_epsilon``.

    ``prior`` are the segments already spent (a resumed run, a ledger). Used to stop training before
    the first step that would overspend, without composing the PLD at every step. The search runs on
    the coarse PLD grid (its ε is an upper bound, so its answer is safe) and then extends the answer
    by the few steps the full-precision grid still allows.
    """
    check_epsilon(target_epsilon)

    def fits(steps: int, discretization: float) -> bool:
        extra = DpSegment(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
        eps = compute_epsilon(
            [*prior, extra], delta=delta, accountant=accountant, pld_discretization=discretization
        )
        return eps <= target_epsilon

    def fits_fine(steps: int) -> bool:
        return fits(steps, DEFAULT_PLD_DISCRETIZATION)

    if accountant == "pld" and fits(1, _COARSE_PLD_DISCRETIZATION):
        safe = _largest_true(lambda n: fits(n, _COARSE_PLD_DISCRETIZATION), 1, limit)
        return _largest_true(fits_fine, safe, limit)
    if not fits_fine(1):
        return 0
    return _largest_true(fits_fine, 1, limit)
