"""Range checks shared by every accounting entry point, so each bad input gets the same message."""

from __future__ import annotations

import math
import warnings

from privacy_finetuner.errors import InvalidParameterError, PrivacyWarning

ACCOUNTANTS: tuple[str, ...] = ("pld", "rdp")


def check_noise_multiplier(noise_multiplier: float, *, allow_zero: bool = False) -> float:
    """σ must be positive; σ = 0 is allowed only where the caller accepts ε = ∞ (tests)."""
    if not math.isfinite(noise_multiplier) or noise_multiplier < 0:
        raise InvalidParameterError(f"noise multiplier must be > 0, got {noise_multiplier}")
    if noise_multiplier == 0 and not allow_zero:
        raise InvalidParameterError("noise multiplier must be > 0, got 0")
    return float(noise_multiplier)


def check_sample_rate(sample_rate: float) -> float:
    """q is a probability of inclusion: (0, 1]."""
    if not math.isfinite(sample_rate) or not 0 < sample_rate <= 1:
        raise InvalidParameterError(f"sample rate must be in (0, 1], got {sample_rate}")
    return float(sample_rate)


def check_steps(steps: int) -> int:
    """Steps are a count of logical (noised) steps, at least one."""
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise InvalidParameterError(f"steps must be an integer >= 1, got {steps}")
    return int(steps)


def check_delta(delta: float, *, dataset_size: int | None = None) -> float:
    """δ must lie in (0, 1); δ > 1/n lets a mechanism publish one record outright, so warn."""
    if not math.isfinite(delta) or not 0 < delta < 1:
        raise InvalidParameterError(f"delta must be in (0, 1), got {delta}")
    if dataset_size is not None and dataset_size > 0 and delta > 1.0 / dataset_size:
        warnings.warn(
            f"delta={delta:g} is larger than 1/n = {1.0 / dataset_size:g} for n={dataset_size}: "
            "a mechanism could release a whole record with that probability; use delta < 1/n",
            PrivacyWarning,
            stacklevel=3,
        )
    return float(delta)


def check_epsilon(epsilon: float) -> float:
    """A target ε must be a positive finite number."""
    if not math.isfinite(epsilon) or epsilon <= 0:
        raise InvalidParameterError(f"target epsilon must be > 0, got {epsilon}")
    return float(epsilon)


def check_accountant(name: str) -> str:
    """Only the accountants backed by dp-accounting are offered."""
    if name not in ACCOUNTANTS:
        raise InvalidParameterError(
            f"unknown accountant {name!r}; choose one of {', '.join(ACCOUNTANTS)}"
        )
    return name
