"""Membership inference: does the model behave differently on examples it was trained on?

Two attacks without shadow or reference models:

* **loss threshold** (Yeom et al. 2018): score = minus the example's loss;
* **zlib-calibrated** (Carlini et al. 2021, "Extracting Training Data from Large Language
  Models"): score = minus the ratio of the model's total log-loss (bits) to the zlib-compressed
  length (bits) of the text, which discounts examples that are simply easy (repetitive, short).

Both are summarised by the ROC curve's area (AUC, 0.5 = no better than chance) and the true
positive rate at a 1 % false positive rate, the number that matters for an attack on a few
individuals. Pure numpy.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from privacy_finetuner.errors import InvalidParameterError

__all__ = [
    "MiaResult",
    "evaluate_attack",
    "roc_auc",
    "roc_curve",
    "tpr_at_fpr",
    "zlib_bits",
    "zlib_calibrated_scores",
]

FloatArray = npt.NDArray[np.float64]


def _split(
    scores: Sequence[float] | FloatArray, members: Sequence[bool] | npt.NDArray[np.bool_]
) -> tuple[FloatArray, FloatArray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    m = np.asarray(members, dtype=bool).reshape(-1)
    if s.shape != m.shape:
        raise InvalidParameterError(f"{s.size} scores but {m.size} membership labels")
    if not np.all(np.isfinite(s)):
        raise InvalidParameterError("membership scores must be finite")
    pos, neg = s[m], s[~m]
    if pos.size == 0 or neg.size == 0:
        raise InvalidParameterError("need at least one member and one non-member")
    return pos, neg


def roc_auc(
    scores: Sequence[float] | FloatArray, members: Sequence[bool] | npt.NDArray[np.bool_]
) -> float:
    """P(score of a random member > score of a random non-member), ties counted ½
    (the Mann-Whitney U statistic over both counts)."""
    pos, neg = _split(scores, members)
    neg_sorted = np.sort(neg)
    below = np.searchsorted(neg_sorted, pos, side="left")
    ties = np.searchsorted(neg_sorted, pos, side="right") - below
    return float((below.sum() + 0.5 * ties.sum()) / (pos.size * neg.size))


def roc_curve(
    scores: Sequence[float] | FloatArray, members: Sequence[bool] | npt.NDArray[np.bool_]
) -> tuple[FloatArray, FloatArray]:
    """False and true positive rates of "member if score ≥ t" over every threshold t, from
    (0, 0) to (1, 1), ordered by increasing FPR."""
    pos, neg = _split(scores, members)
    thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
    pos_sorted, neg_sorted = np.sort(pos), np.sort(neg)
    tp = pos.size - np.searchsorted(pos_sorted, thresholds, side="left")
    fp = neg.size - np.searchsorted(neg_sorted, thresholds, side="left")
    fpr = np.concatenate([[0.0], fp / neg.size])
    tpr = np.concatenate([[0.0], tp / pos.size])
    return fpr.astype(np.float64), tpr.astype(np.float64)


def tpr_at_fpr(
    scores: Sequence[float] | FloatArray,
    members: Sequence[bool] | npt.NDArray[np.bool_],
    *,
    fpr: float = 0.01,
) -> float:
    """Highest TPR of a threshold whose FPR is at most ``fpr``."""
    if not 0 <= fpr <= 1:
        raise InvalidParameterError(f"fpr must be in [0, 1], got {fpr}")
    fprs, tprs = roc_curve(scores, members)
    return float(np.max(tprs[fprs <= fpr + 1e-12]))


def zlib_bits(text: str) -> float:
    """Length in bits of ``text`` compressed with zlib at level 9."""
    return 8.0 * len(zlib.compress(text.encode("utf-8"), 9))


def zlib_calibrated_scores(
    total_nll_nats: Sequence[float] | FloatArray, texts: Sequence[str]
) -> FloatArray:
    """Minus (model bits / zlib bits) per example: high when the model finds the text far more
    predictable than a generic compressor does."""
    nll = np.asarray(total_nll_nats, dtype=np.float64).reshape(-1)
    if nll.size != len(texts):
        raise InvalidParameterError(f"{nll.size} losses but {len(texts)} texts")
    z = np.array([zlib_bits(t) for t in texts], dtype=np.float64)
    return np.asarray(-(nll / math.log(2.0)) / z, dtype=np.float64)


@dataclass(frozen=True)
class MiaResult:
    """One attack's summary, plus its ROC curve (thinned for plotting)."""

    attack: str
    auc: float
    tpr_at_1pct_fpr: float
    members: int
    non_members: int
    fpr: list[float]
    tpr: list[float]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "attack": self.attack,
            "auc": self.auc,
            "tpr_at_1pct_fpr": self.tpr_at_1pct_fpr,
            "members": self.members,
            "non_members": self.non_members,
            "roc": {"fpr": self.fpr, "tpr": self.tpr},
        }


def evaluate_attack(
    attack: str,
    scores: Sequence[float] | FloatArray,
    members: Sequence[bool] | npt.NDArray[np.bool_],
    *,
    max_points: int = 200,
) -> MiaResult:
    """AUC, TPR at 1 % FPR and the ROC curve (at most ``max_points`` points) of one attack."""
    fpr, tpr = roc_curve(scores, members)
    if fpr.size > max_points:
        keep = np.unique(np.linspace(0, fpr.size - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    m = np.asarray(members, dtype=bool)
    return MiaResult(
        attack=attack,
        auc=roc_auc(scores, members),
        tpr_at_1pct_fpr=tpr_at_fpr(scores, members, fpr=0.01),
        members=int(m.sum()),
        non_members=int((~m).sum()),
        fpr=[round(float(x), 5) for x in fpr],
        tpr=[round(float(x), 5) for x in tpr],
    )
