"""Exposure of planted secrets (Carlini et al., "The Secret Sharer", USENIX Security 2019).

A canary ``s`` is drawn uniformly from a space ``R`` of secrets (for example all 12-digit codes in
a fixed frame). After training, every secret gets a score, its negative log-likelihood under the
model (lower = the model finds it more likely). The *exposure* of ``s`` is

    exposure(s) = log2 |R| - log2 rank(s),

where ``rank(s)`` is the position of ``s`` among all of ``R`` sorted by score (1 = most likely).
A secret the model has not memorised sits in the middle (exposure about 1 bit); a memorised one
ranks first (exposure log2 |R|).

``R`` is too large to enumerate, so two estimates are offered, both from a sample of at least
10⁴ candidates drawn uniformly from ``R``:

* :func:`rank_exposure`: the rank among the sample, ``log2((N + 1) / (1 + #{c : score(c) < s}))``
  (ties count half). Exact in expectation, but capped at ``log2(N + 1)`` (about 13.3 bits for
  N = 10⁴).
* :func:`extrapolated_exposure`: as in section 4.2 of the paper, fit a skew-normal distribution
  to the candidates' scores and read the canary's tail probability from it:
  ``exposure = -log2 CDF(score(s))``, capped at ``log2 |R|``. This extends beyond the sample.

Pure numpy/scipy; no model code here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from privacy_finetuner.errors import InvalidParameterError

__all__ = [
    "MIN_CANDIDATES",
    "SkewNormalFit",
    "extrapolated_exposure",
    "fit_skew_normal",
    "rank_exposure",
]

#: The paper's rule of thumb: rank among at least this many candidates.
MIN_CANDIDATES = 10_000

FloatArray = npt.NDArray[np.float64]


def _as_1d(values: Sequence[float] | FloatArray, what: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise InvalidParameterError(f"{what} is empty")
    if not np.all(np.isfinite(arr)):
        raise InvalidParameterError(f"{what} contains NaN or infinite scores")
    return arr


def rank_exposure(
    canary_scores: Sequence[float] | FloatArray,
    candidate_scores: Sequence[float] | FloatArray,
) -> FloatArray:
    """Exposure in bits of each canary from its rank among sampled candidates.

    Args:
        canary_scores: one score per canary (negative log-likelihood; lower = more likely).
        candidate_scores: scores of N secrets drawn uniformly from the same space.

    Returns:
        ``log2((N + 1) / (1 + below + ties / 2))`` per canary, in ``[0, log2(N + 1)]``, where
        ``below`` counts candidates scored strictly lower than the canary.
    """
    canaries = _as_1d(canary_scores, "canary_scores")
    candidates = np.sort(_as_1d(candidate_scores, "candidate_scores"))
    below = np.searchsorted(candidates, canaries, side="left")
    ties = np.searchsorted(candidates, canaries, side="right") - below
    rank = 1.0 + below + 0.5 * ties
    n = candidates.size
    return np.asarray(np.log2((n + 1.0) / rank), dtype=np.float64)


@dataclass(frozen=True)
class SkewNormalFit:
    """A skew-normal distribution fitted to candidate scores (scipy's parametrisation)."""

    shape: float
    loc: float
    scale: float

    def log_cdf(self, x: FloatArray) -> FloatArray:
        """Natural log of the CDF at ``x``."""
        return np.asarray(
            stats.skewnorm.logcdf(x, self.shape, loc=self.loc, scale=self.scale), dtype=np.float64
        )


def fit_skew_normal(candidate_scores: Sequence[float] | FloatArray) -> SkewNormalFit:
    """Maximum-likelihood skew-normal fit to candidate scores (falls back to a normal fit when
    the scores are degenerate)."""
    candidates = _as_1d(candidate_scores, "candidate_scores")
    std = float(np.std(candidates))
    if candidates.size < 3 or std == 0.0:
        return SkewNormalFit(0.0, float(np.mean(candidates)), max(std, 1e-12))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        shape, loc, scale = stats.skewnorm.fit(candidates)
    if not (math.isfinite(shape) and math.isfinite(loc) and math.isfinite(scale) and scale > 0):
        return SkewNormalFit(0.0, float(np.mean(candidates)), std)
    return SkewNormalFit(float(shape), float(loc), float(scale))


def extrapolated_exposure(
    canary_scores: Sequence[float] | FloatArray,
    candidate_scores: Sequence[float] | FloatArray,
    *,
    space_size: float,
    fit: SkewNormalFit | None = None,
) -> FloatArray:
    """Exposure in bits from a skew-normal fit to the candidates' scores.

    Args:
        canary_scores: one score per canary (lower = more likely).
        candidate_scores: scores of secrets drawn uniformly from the space.
        space_size: ``|R|``, the number of possible secrets (exposure is capped at its log2).
        fit: a precomputed fit of ``candidate_scores`` (to reuse across calls).

    Returns:
        ``min(log2 |R|, -log2 F(score))`` per canary, with ``F`` the fitted CDF.
    """
    if not (space_size >= 2 and math.isfinite(space_size)):
        raise InvalidParameterError(f"space_size must be a finite number ≥ 2, got {space_size}")
    canaries = _as_1d(canary_scores, "canary_scores")
    fitted = fit or fit_skew_normal(candidate_scores)
    bits = -fitted.log_cdf(canaries) / math.log(2.0)
    return np.asarray(np.clip(bits, 0.0, math.log2(space_size)), dtype=np.float64)
