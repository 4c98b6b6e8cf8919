"""The one-run privacy audit (Steinke, Nasr and Jagielski, "Privacy Auditing with One (1)
Training Run", NeurIPS 2023).

``m`` audit examples (canaries) are each put in the training set independently with probability
½. After training, an attacker scores every canary (higher = "looks like a member"), guesses
"in" for the ``k+`` highest scores and "out" for the ``k-`` lowest, and abstains on the rest.
If training is (ε, δ)-DP, the number ``W`` of correct guesses among the ``r = k+ + k-`` made is
stochastically dominated by ``Binomial(r, e^ε / (1 + e^ε))`` up to a δ term (their Theorem 3.1
with the δ correction of their Proposition 5.x / Algorithm 2):

    p(ε, δ) = P[Bin(r, q) ≥ v] + 2 m δ · max_{1 ≤ i ≤ v} P[v - i ≤ Bin(r, q) < v] / i,
    q = e^ε / (1 + e^ε).

Observing ``v`` correct guesses rejects "(ε, δ)-DP" at level α when ``p(ε, δ) < α``; the
reported lower bound is the largest ε rejected at 95 % confidence. A lower bound above the ε the
accountant *proves* is a contradiction: either an unlucky 5 % event or, far more likely, a bug
(noise not added, a sample rate that is not what the accountant assumed, …).

Trying several ``(k+, k-)`` and keeping the best would be a multiple comparison, so
:func:`one_run_lower_bound` applies a Bonferroni correction over its grid of guess counts: the
bound holds at the stated confidence for the whole search, not per guess count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from privacy_finetuner.errors import InvalidParameterError

__all__ = [
    "OneRunBound",
    "default_guess_grid",
    "epsilon_lower_bound",
    "one_run_lower_bound",
    "one_run_p_value",
]

_EPS_MAX = 60.0


def _check_counts(m: int, r: int, v: int) -> None:
    if not (0 <= v <= r <= m):
        raise InvalidParameterError(f"need 0 ≤ correct ≤ guesses ≤ m, got {v}, {r}, {m}")


def one_run_p_value(*, m: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """P-value of ``correct`` or more right guesses out of ``guesses`` if training is (ε, δ)-DP.

    Args:
        m: number of audit examples (each included with probability ½).
        guesses: guesses made (abstentions excluded), ``r``.
        correct: right guesses, ``v``.
        epsilon: ε of the null hypothesis, ≥ 0.
        delta: δ of the null hypothesis, in [0, 1].
    """
    _check_counts(m, guesses, correct)
    if not (epsilon >= 0 and delta >= 0 and delta <= 1):
        raise InvalidParameterError(f"need ε ≥ 0 and δ in [0, 1], got {epsilon}, {delta}")
    if correct == 0:
        return 1.0
    q = 1.0 / (1.0 + math.exp(-epsilon)) if epsilon < 700 else 1.0
    beta = float(stats.binom.sf(correct - 1, guesses, q))
    alpha = 0.0
    if delta > 0:
        # P[v - i <= Bin < v] for i = 1..v, i.e. cumulative pmf from v - 1 downwards.
        js = np.arange(correct - 1, -1, -1)
        cumulative = np.cumsum(stats.binom.pmf(js, guesses, q))
        alpha = float(np.max(cumulative / np.arange(1, correct + 1)))
    return min(1.0, beta + 2.0 * m * delta * alpha)


def epsilon_lower_bound(
    *, m: int, guesses: int, correct: int, delta: float, confidence: float = 0.95
) -> float:
    """Largest ε that ``correct`` right guesses out of ``guesses`` reject at ``confidence``.

    Returns 0 when even ε = 0 cannot be rejected. Bisection on ε; the p-value grows with ε.
    """
    if not 0 < confidence < 1:
        raise InvalidParameterError(f"confidence must be in (0, 1), got {confidence}")
    level = 1.0 - confidence

    def rejected(eps: float) -> bool:
        p = one_run_p_value(m=m, guesses=guesses, correct=correct, epsilon=eps, delta=delta)
        return p < level

    if not rejected(0.0):
        return 0.0
    lo, hi = 0.0, _EPS_MAX
    if rejected(hi):
        return hi
    while hi - lo > 1e-4:
        mid = 0.5 * (lo + hi)
        if rejected(mid):
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class OneRunBound:
    """The audit's result.

    Attributes:
        epsilon_lower: ε lower bound at ``confidence`` (Bonferroni-corrected over the grid).
        confidence: e.g. 0.95.
        delta: δ used in the bound (the run's δ).
        m: audit examples.
        members: of them, how many were trained on.
        k_plus: "in" guesses of the best grid point.
        k_minus: "out" guesses of the best grid point.
        correct: right guesses at that point.
        grid_size: number of (k+, k-) pairs tried (the Bonferroni factor).
    """

    epsilon_lower: float
    confidence: float
    delta: float
    m: int
    members: int
    k_plus: int
    k_minus: int
    correct: int
    grid_size: int

    @property
    def guesses(self) -> int:
        """Guesses made at the best grid point."""
        return self.k_plus + self.k_minus

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {**asdict(self), "guesses": self.guesses}


def default_guess_grid(m: int) -> list[tuple[int, int]]:
    """``(k+, k-)`` pairs: symmetric and one-sided guess counts on a geometric scale."""
    sizes: list[int] = []
    k = 1
    while k <= m // 2:
        sizes.append(k)
        k = max(k + 1, round(k * 1.6))
    if m // 2 >= 1 and m // 2 not in sizes:
        sizes.append(m // 2)
    grid = [(k, k) for k in sizes] + [(k, 0) for k in sizes]
    return sorted(set(grid))


def one_run_lower_bound(
    scores: Sequence[float] | npt.NDArray[np.float64],
    included: Sequence[bool] | npt.NDArray[np.bool_],
    *,
    delta: float,
    confidence: float = 0.95,
    grid: Sequence[tuple[int, int]] | None = None,
) -> OneRunBound:
    """ε lower bound from one training run.

    Args:
        scores: one membership score per audit example; higher = more likely trained on
            (e.g. minus the loss).
        included: whether each example was in the training set (drawn with probability ½).
        delta: δ of the guarantee being audited.
        confidence: confidence of the bound, for the whole grid together.
        grid: ``(k+, k-)`` guess counts to try (default :func:`default_guess_grid`).
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    inc = np.asarray(included, dtype=bool).reshape(-1)
    if s.shape != inc.shape:
        raise InvalidParameterError(f"{s.size} scores but {inc.size} inclusion flags")
    if s.size == 0 or not np.all(np.isfinite(s)):
        raise InvalidParameterError("scores must be a non-empty array of finite numbers")
    m = int(s.size)
    pairs = [(kp, km) for kp, km in (grid or default_guess_grid(m)) if kp + km <= m]
    if not pairs:
        raise InvalidParameterError("no guess count fits the number of audit examples")
    per_test = 1.0 - (1.0 - confidence) / len(pairs)
    # Stable order: ties broken by index, so the result does not depend on the sort algorithm.
    order = np.lexsort((np.arange(m), -s))
    inc_sorted = inc[order]
    hits_top = np.concatenate([[0], np.cumsum(inc_sorted)])
    hits_bottom = np.concatenate([[0], np.cumsum(~inc_sorted[::-1])])
    best = OneRunBound(0.0, confidence, delta, m, int(inc.sum()), 0, 0, 0, len(pairs))
    for k_plus, k_minus in pairs:
        correct = int(hits_top[k_plus] + hits_bottom[k_minus])
        if 2 * correct <= k_plus + k_minus:
            continue  # no better than chance: rejects nothing
        eps = epsilon_lower_bound(
            m=m, guesses=k_plus + k_minus, correct=correct, delta=delta, confidence=per_test
        )
        if eps > best.epsilon_lower or best.k_plus == 0:
            best = OneRunBound(
                eps, confidence, delta, m, int(inc.sum()), k_plus, k_minus, correct, len(pairs)
            )
    return best
