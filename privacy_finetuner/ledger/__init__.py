"""Privacy-budget ledger: per data set (ε, δ) budgets enforced across jobs, hash-chained.

Needs the ``service`` extra (SQLAlchemy); import it only where the ledger is used.
"""

from privacy_finetuner.ledger.budget import counts_from_segments, epsilon_of
from privacy_finetuner.ledger.db import DEFAULT_DATABASE_URL, Database
from privacy_finetuner.ledger.models import ApiKey, AuditEvent, Base, Dataset, Job, LedgerEntry
from privacy_finetuner.ledger.report import build_audit_report, parse_since, write_audit_report
from privacy_finetuner.ledger.store import PRIVACY_UNITS, TERMINAL_STATES, BudgetStatus, Ledger
from privacy_finetuner.ledger.verify import VerifyResult, anchors_from_report, verify_ledger

__all__ = [
    "DEFAULT_DATABASE_URL",
    "PRIVACY_UNITS",
    "TERMINAL_STATES",
    "ApiKey",
    "AuditEvent",
    "Base",
    "BudgetStatus",
    "Database",
    "Dataset",
    "Job",
    "Ledger",
    "LedgerEntry",
    "VerifyResult",
    "anchors_from_report",
    "build_audit_report",
    "counts_from_segments",
    "epsilon_of",
    "parse_since",
    "verify_ledger",
    "write_audit_report",
]
