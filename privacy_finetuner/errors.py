"""The one exception hierarchy of privacy_finetuner.

Every error the package raises on purpose derives from :class:`PrivacyFinetunerError`, so a caller
(the CLI, the HTTP service, a user's script) can catch at the level it cares about. Messages are
written for the person who has to fix the input: they name the offending value or file, and they
never contain secrets (keys, tokens, PII found by the guard).
"""

from __future__ import annotations

__all__ = [
    "AccountingError",
    "AuthError",
    "BudgetExceededError",
    "CalibrationError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DataValidationError",
    "EngineError",
    "FederatedError",
    "GuardError",
    "GuardKeyError",
    "InvalidParameterError",
    "LedgerError",
    "MissingDependencyError",
    "ModelError",
    "NotFoundError",
    "PrivacyFinetunerError",
    "PrivacyWarning",
    "SamplingError",
    "UnsupportedModuleError",
]


class PrivacyFinetunerError(Exception):
    """Root of every error raised on purpose by privacy_finetuner."""


class ConfigError(PrivacyFinetunerError, ValueError):
    """A configuration file, flag or argument is invalid."""


class InvalidParameterError(ConfigError):
    """A numeric DP parameter (σ, q, δ, ε, steps, C) is outside its valid range."""


class AccountingError(PrivacyFinetunerError):
    """The privacy accountant cannot answer the question asked of it."""


class CalibrationError(AccountingError):
    """No noise multiplier reaches the target (ε, δ) for the given sampling and steps."""


class BudgetExceededError(AccountingError):
    """The work asked for would spend more privacy budget than is left.

    Attributes:
        requested_epsilon: ε the data set would have spent after the work.
        budget_epsilon: the data set's lifetime ε budget.
    """

    def __init__(self, message: str, *, requested_epsilon: float, budget_epsilon: float) -> None:
        super().__init__(message)
        self.requested_epsilon = requested_epsilon
        self.budget_epsilon = budget_epsilon


class DataError(PrivacyFinetunerError):
    """Training or evaluation data cannot be read or used."""


class DataValidationError(DataError):
    """A record does not match the expected schema; names the file and line where known."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")
        self.path = path
        self.line = line


class GuardError(PrivacyFinetunerError):
    """The context guard cannot protect or reveal the given input."""


class GuardKeyError(GuardError):
    """An encryption or pseudonymisation key is missing, malformed or wrong."""


class EngineError(PrivacyFinetunerError):
    """The DP training engine cannot privatise the given model, optimizer or loader."""


class UnsupportedModuleError(EngineError):
    """A module breaks per-example (or per-user) clipping, for example BatchNorm."""


class SamplingError(EngineError):
    """The data loader does not sample the way the accountant assumes (Poisson)."""


class FederatedError(PrivacyFinetunerError):
    """A federated run cannot go on: too few clients, a node with a different model, a server
    asking a client for more than its job allows."""


class CheckpointError(PrivacyFinetunerError):
    """A checkpoint is missing, incomplete or inconsistent with the run being resumed."""


class ModelError(PrivacyFinetunerError):
    """A base model or tokenizer cannot be loaded or built."""


class LedgerError(PrivacyFinetunerError):
    """The privacy-budget ledger cannot record or answer."""


class AuthError(PrivacyFinetunerError):
    """An API key is missing, unknown, revoked or lacks the scope asked for."""


class NotFoundError(PrivacyFinetunerError, LookupError):
    """A named object (data set, job, run directory, key) does not exist."""


class MissingDependencyError(PrivacyFinetunerError, ImportError):
    """An optional extra is needed for this feature; the message names the pip command."""

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs the '{extra}' extra: pip install 'privacy-finetuner[{extra}]'"
        )
        self.extra = extra


class PrivacyWarning(UserWarning):
    """A setting is legal but weakens or voids the privacy guarantee (δ > 1/n, σ = 0, …)."""
