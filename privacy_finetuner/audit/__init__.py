"""Empirical privacy: canary exposure, the one-run ε lower bound, membership inference, and the
compliance pack.

The math (:mod:`.exposure`, :mod:`.one_run`, :mod:`.mia`) is numpy/scipy only; model scoring
(:mod:`.scoring`) imports torch lazily.
"""

from privacy_finetuner.audit.exposure import (
    MIN_CANDIDATES,
    extrapolated_exposure,
    fit_skew_normal,
    rank_exposure,
)
from privacy_finetuner.audit.mia import MiaResult, evaluate_attack, roc_auc, roc_curve, tpr_at_fpr
from privacy_finetuner.audit.one_run import (
    OneRunBound,
    epsilon_lower_bound,
    one_run_lower_bound,
    one_run_p_value,
)

__all__ = [
    "MIN_CANDIDATES",
    "MiaResult",
    "OneRunBound",
    "epsilon_lower_bound",
    "evaluate_attack",
    "extrapolated_exposure",
    "fit_skew_normal",
    "one_run_lower_bound",
    "one_run_p_value",
    "rank_exposure",
    "roc_auc",
    "roc_curve",
    "tpr_at_fpr",
]
