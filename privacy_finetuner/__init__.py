"""privacy-finetuner: differentially private fine-tuning of LLM agents, with proof and audit.

The core (config, errors, accounting, CLI) imports without torch; the training engine is loaded on
first use of :class:`PrivacyEngine`, so ``import privacy_finetuner`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from privacy_finetuner._version import __version__
from privacy_finetuner.accounting import (
    DpSegment,
    PrivacyAccountant,
    calibrate_noise_multiplier,
    compute_epsilon,
)

if TYPE_CHECKING:
    from privacy_finetuner.engine import PrivacyEngine

__all__ = [
    "__version__",
    "calibrate_noise_multiplier",
    "compute_epsilon",
    "DpSegment",
    "PrivacyAccountant",
    "PrivacyEngine",
]


def __getattr__(name: str) -> Any:
    """Load torch-dependent names lazily, with an install hint when the extra is missing."""
    if name == "PrivacyEngine":
        from privacy_finetuner.errors import MissingDependencyError

        try:
            from privacy_finetuner.engine import PrivacyEngine
        except ModuleNotFoundError as exc:  # torch is an optional extra
            if exc.name in {"torch", "transformers", "peft"}:
                raise MissingDependencyError("PrivacyEngine", "train") from exc
            raise
        return PrivacyEngine
    raise AttributeError(f"module 'privacy_finetuner' has no attribute {name!r}")
