"""Request and response bodies of the HTTP API (``*Create`` in, ``*Public`` out)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


UtcDatetime = Annotated[dt.datetime, AfterValidator(_utc)]

__all__ = [
    "ERROR_RESPONSES",
    "UtcDatetime",
    "AuditEventPublic",
    "DatasetCreate",
    "DatasetPublic",
    "JobCreate",
    "JobPublic",
    "LedgerEntryPublic",
    "Page",
    "ProtectRequest",
    "ProtectResponse",
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetCreate(_In):
    """Register a data set with its lifetime (ε, δ) budget."""

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")
    budget_epsilon: float = Field(gt=0, le=1000, description="Lifetime ε budget.")
    budget_delta: float = Field(gt=0, lt=1, description="δ at which ε is accounted.")
    privacy_unit: Literal["example", "user"] = "example"
    num_units: int | None = Field(None, ge=1, description="Examples or users, to plan q.")
    data_path: str | None = Field(
        None,
        max_length=1000,
        description="Operator keys only: a file under PF_DATA_ROOT that workers read. Tenants "
        "bring data with POST /v1/datasets/{id}/files instead.",
    )
    tenant: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Operator keys only: register the data set for this tenant.",
    )
    description: str = Field("", max_length=2000)


class DatasetPublic(BaseModel):
    """A data set and its budget now."""

    id: str
    name: str
    tenant: str
    privacy_unit: str
    num_units: int | None
    description: str
    created_at: UtcDatetime
    budget_epsilon: float
    delta: float
    spent_epsilon: float
    committed_epsilon: float
    remaining_epsilon: float
    active_jobs: int
    ledger_entries: int
    ledger_head: str
    has_data: bool = False
    upload: dict[str, Any] | None = None


class LedgerEntryPublic(BaseModel):
    """One hash-chained ledger entry."""

    seq: int
    kind: str
    job_id: str | None
    payload: dict[str, Any]
    created_at: UtcDatetime
    prev_hash: str
    hash: str


class JobCreate(_In):
    """Submit a training job against a data set's budget.

    There is no ``users`` field: a job trains on every user of its data set and is charged to
    all of them (a client's list of users was only a label the trainer never applied).
    """

    dataset_id: str = Field(min_length=1, max_length=40)
    config: dict[str, Any] = Field(default_factory=dict, description="A job config (as the CLI).")


class JobPublic(BaseModel):
    """A job: state, progress and the ε it has spent so far."""

    id: str
    dataset_id: str
    state: str
    progress: float
    steps_done: int
    steps_planned: int
    epsilon: float
    delta: float
    planned_dataset_epsilon: float
    noise_multiplier: float
    sample_rate: float
    clip_norm: float
    attempts: int
    cancel_requested: bool
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    error: str | None
    result: dict[str, Any] | None


class AuditEventPublic(BaseModel):
    """Who did what."""

    created_at: UtcDatetime
    actor: str
    action: str
    resource: str | None
    outcome: str
    request_id: str | None
    detail: dict[str, Any]


class Page(BaseModel):
    """One page of a list."""

    items: list[Any]
    count: int
    limit: int
    offset: int


class ProtectRequest(_In):
    """Text to protect with the context guard."""

    text: str = Field(max_length=1_000_000)


class ProtectResponse(BaseModel):
    """The protected text and how many findings were replaced."""

    text: str
    findings: int | None = None


#: Status codes every authenticated route may answer (documented in OpenAPI).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed request body"},
    401: {"description": "Missing or invalid API key"},
    403: {"description": "The API key lacks the scope"},
    404: {"description": "Not found (or another tenant's)"},
    413: {"description": "Request body or text too large"},
    429: {"description": "Too many failed authentications from this client"},
}
