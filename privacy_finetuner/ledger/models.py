"""SQLAlchemy 2 tables of the privacy-budget ledger (and the service tables that share its schema).

The schema is owned by the Alembic migrations in ``privacy_finetuner/service/migrations``; these
classes describe it for the ORM. Everything the ledger proves lives in :class:`LedgerEntry`
(append-only, hash-chained per data set); :class:`Dataset` and :class:`Job` hold aggregates that
``ledger verify`` re-derives from the entries.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["ApiKey", "AuditEvent", "Base", "Dataset", "Job", "LedgerEntry", "utcnow"]


def utcnow() -> dt.datetime:
    """Timezone-aware UTC now (stored naive-UTC by SQLite, timestamptz by PostgreSQL)."""
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of every privacy_finetuner table."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class Dataset(Base):
    """A data set with a lifetime (ε, δ) budget; its row is the lock every budget change takes."""

    __tablename__ = "pf_datasets"
    __table_args__ = (UniqueConstraint("tenant", "name", name="uq_pf_datasets_tenant_name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200))
    budget_epsilon: Mapped[float] = mapped_column(Float)
    budget_delta: Mapped[float] = mapped_column(Float)
    privacy_unit: Mapped[str] = mapped_column(String(16))
    num_units: Mapped[int | None] = mapped_column(Integer, nullable=True)
    data_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: Aggregate of every charge entry: {"σ|q": steps}; re-derived by verify.
    charged: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    entry_count: Mapped[int] = mapped_column(Integer, default=0)
    head_hash: Mapped[str] = mapped_column(String(64), default="")
    #: Counts of an uploaded file (traces, users, bytes, PII findings by type); None: none.
    upload_stats: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class LedgerEntry(Base):
    """One append-only, hash-chained ledger record (registration, reservation, charge, …)."""

    __tablename__ = "pf_ledger_entries"
    __table_args__ = (
        UniqueConstraint("dataset_id", "seq", name="uq_pf_ledger_entries_dataset_seq"),
        Index("ix_pf_ledger_entries_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("pf_datasets.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Job(Base):
    """A training job against one data set: its plan (reservation), charges and lifecycle."""

    __tablename__ = "pf_jobs"
    __table_args__ = (
        UniqueConstraint("tenant", "idempotency_key", name="uq_pf_jobs_tenant_idempotency_key"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("pf_datasets.id"), index=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    planned: Mapped[list[Any]] = mapped_column(JSON)
    charged: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    users: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    planned_epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    steps_planned: Mapped[int] = mapped_column(Integer)
    steps_done: Mapped[int] = mapped_column(Integer, default=0)
    noise_multiplier: Mapped[float] = mapped_column(Float)
    sample_rate: Mapped[float] = mapped_column(Float)
    clip_norm: Mapped[float] = mapped_column(Float)
    active: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    run_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    report_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: Fencing token of the current attempt: heartbeat, charge and finish must present it.
    attempt_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ApiKey(Base):
    """An API key: public id, sha256 of its secret part, tenant and scopes."""

    __tablename__ = "pf_api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    scopes: Mapped[str] = mapped_column(String(200))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: After this the key is refused (None: no expiry).
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuditEvent(Base):
    """Who did what: one row per state-changing request (and key management from the CLI)."""

    __tablename__ = "pf_audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    resource: Mapped[str | None] = mapped_column(String(200), nullable=True)
    outcome: Mapped[str] = mapped_column(String(32))
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
