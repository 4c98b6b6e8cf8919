"""The audit log: who (key id) did what to which resource, with what outcome."""

from __future__ import annotations

import logging
from typing import Any

from privacy_finetuner.ledger.db import Database
from privacy_finetuner.ledger.models import AuditEvent, utcnow

__all__ = ["record_audit"]

_log = logging.getLogger("privacy_finetuner.service.audit")


def record_audit(
    db: Database,
    *,
    actor: str,
    action: str,
    outcome: str,
    tenant: str | None = None,
    resource: str | None = None,
    request_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one audit row; a failure to write it is logged, never raised to the caller."""
    try:
        with db.write_session() as session:
            session.add(
                AuditEvent(
                    created_at=utcnow(),
                    tenant=tenant,
                    actor=actor,
                    action=action,
                    resource=resource,
                    outcome=outcome,
                    request_id=request_id,
                    detail=detail or {},
                )
            )
    except Exception:
        _log.exception("could not write audit event", extra={"action": action})
