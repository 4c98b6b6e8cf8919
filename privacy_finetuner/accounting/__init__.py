"""Privacy accounting for DP-SGD on top of Google's dp-accounting (PLD and RDP)."""

from privacy_finetuner.accounting._validation import (
    ACCOUNTANTS,
    check_accountant,
    check_delta,
    check_epsilon,
    check_noise_multiplier,
)
from privacy_finetuner.accounting.accountant import PrivacyAccountant
from privacy_finetuner.accounting.calibration import (
    Calibration,
    calibrate_noise_multiplier,
    max_steps_within_budget,
)
from privacy_finetuner.accounting.epsilon import (
    DpSegment,
    EpsilonEstimate,
    compute_epsilon,
    estimate_epsilon,
    segments_to_event,
)

__all__ = [
    "ACCOUNTANTS",
    "Calibration",
    "DpSegment",
    "EpsilonEstimate",
    "PrivacyAccountant",
    "calibrate_noise_multiplier",
    "check_accountant",
    "check_delta",
    "check_epsilon",
    "check_noise_multiplier",
    "compute_epsilon",
    "estimate_epsilon",
    "max_steps_within_budget",
    "segments_to_event",
]
