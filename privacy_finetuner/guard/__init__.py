"""Context guard: find and redact, pseudonymise or encrypt PII and secrets in text, chat
messages, tool-call JSON and training data, offline and fast.

>>> from privacy_finetuner.guard import ContextGuard
>>> ContextGuard().protect("Mail jane.doe@example.com").text
'Mail [EMAIL]'
"""

from __future__ import annotations

from privacy_finetuner.errors import MissingDependencyError

try:  # the 'guard' extra; fail at import (an ImportError) rather than on the first phone number
    import cryptography  # noqa: F401
    import phonenumbers  # noqa: F401
    import stdnum  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingDependencyError("the context guard", "guard") from exc

from privacy_finetuner.guard._model import (
    ENTITY_TYPES,
    Finding,
    ProtectedMessages,
    ProtectedText,
    Strategy,
)
from privacy_finetuner.guard.detectors import BuiltinDetector, Detector
from privacy_finetuner.guard.guard import SENSITIVITY_THRESHOLDS, ContextGuard
from privacy_finetuner.guard.kanon import KAnonymityResult, k_anonymize
from privacy_finetuner.guard.keys import KeyRing

__all__ = [
    "ENTITY_TYPES",
    "SENSITIVITY_THRESHOLDS",
    "BuiltinDetector",
    "ContextGuard",
    "Detector",
    "Finding",
    "KAnonymityResult",
    "KeyRing",
    "ProtectedMessages",
    "ProtectedText",
    "Strategy",
    "k_anonymize",
]
