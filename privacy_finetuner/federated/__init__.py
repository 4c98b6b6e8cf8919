"""Federated DP fine-tuning with Flower: client-level DP, SecAgg+, optional local DP-SGD.

This package imports neither Flower nor torch; ``client_app``, ``server_app`` and ``simulate``
do (the ``federated`` and ``train`` extras). Importing it defaults Flower's telemetry and update
check to off, before any Flower module can read them.
"""

import os

from privacy_finetuner.federated.accountant import (
    ClientLevelAccountant,
    ClientLevelPlan,
    plan_client_level,
)
from privacy_finetuner.federated.partition import partition_by_user

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

__all__ = ["ClientLevelAccountant", "ClientLevelPlan", "partition_by_user", "plan_client_level"]
