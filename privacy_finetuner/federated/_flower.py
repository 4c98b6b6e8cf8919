"""Import Flower on demand, with its telemetry and update check off.

Flower reads ``FLWR_TELEMETRY_ENABLED`` when it is first imported and otherwise reports usage
events to its developers; a privacy tool must not make network calls the user did not ask for.
Both variables are only defaulted, so a user who wants telemetry can still set them.
"""

from __future__ import annotations

import logging
import os

from privacy_finetuner.errors import MissingDependencyError

__all__ = ["require_flower", "set_flower_log_level"]


def require_flower() -> None:
    """Check that Flower (and Ray, for simulations) can be imported; call before any flwr import.

    Raises:
        MissingDependencyError: the ``federated`` extra is not installed.
    """
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    try:
        import flwr  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "flwr":
            raise MissingDependencyError(
                "Federated fine-tuning (Flower, Python 3.11+)", "federated"
            ) from exc
        raise


def set_flower_log_level(level: int) -> None:
    """Flower logs every protocol stage at INFO; the CLI shows warnings only unless verbose."""
    logging.getLogger("flwr").setLevel(level)
