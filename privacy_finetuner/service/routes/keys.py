"""Tenant key management over HTTP: create (with expiry), list, revoke; every change audited.

A tenant admin manages its own tenant's keys only: a key id of another tenant answers 404. The
full key is returned once, at creation; afterwards only its public id is ever shown.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from privacy_finetuner.errors import ConfigError, NotFoundError
from privacy_finetuner.ledger.models import ApiKey
from privacy_finetuner.service.audit import record_audit
from privacy_finetuner.service.deps import CtxDep, require
from privacy_finetuner.service.schemas import ERROR_RESPONSES, UtcDatetime
from privacy_finetuner.service.security import Principal

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=ERROR_RESPONSES)

Admin = Annotated[Principal, require("admin")]


class KeyCreate(BaseModel):
    """A new key of the caller's tenant."""

    model_config = ConfigDict(extra="forbid")

    scopes: list[str] = Field(min_length=1, max_length=4, description="admin, submit, read, guard.")
    name: str = Field("", max_length=200)
    expires_in_days: float | None = Field(None, gt=0, le=3650, description="Unset: no expiry.")


class KeyPublic(BaseModel):
    """A key without its secret."""

    id: str
    tenant: str
    name: str
    scopes: list[str]
    created_at: UtcDatetime
    expires_at: UtcDatetime | None
    revoked_at: UtcDatetime | None


class KeyCreated(KeyPublic):
    """The new key: ``key`` is shown this once."""

    key: str


def _public(row: ApiKey) -> dict[str, Any]:
    return {
        "id": row.id,
        "tenant": row.tenant,
        "name": row.name,
        "scopes": row.scopes.split(","),
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
    }


@router.post("", status_code=201, response_model=KeyCreated)
def create_key(body: KeyCreate, ctx: CtxDep, who: Admin, request: Request) -> KeyCreated:
    """Create a key of the caller's tenant (admin)."""
    try:
        key, row = ctx.keys.create(
            tenant=who.tenant,
            scopes=body.scopes,
            name=body.name,
            expires_in_days=body.expires_in_days,
        )
    except ConfigError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    record_audit(
        ctx.db,
        actor=who.key_id,
        tenant=who.tenant,
        action="key.create",
        resource=row.id,
        outcome="ok",
        request_id=request.state.request_id,
        detail={
            "scopes": row.scopes,
            "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        },
    )
    return KeyCreated(key=key, **_public(row))


@router.get("", response_model=list[KeyPublic])
def list_keys(ctx: CtxDep, who: Admin) -> list[KeyPublic]:
    """The caller's tenant's keys (admin)."""
    return [KeyPublic(**_public(r)) for r in ctx.keys.list(tenant=who.tenant)]


@router.delete("/{key_id}", response_model=KeyPublic)
def revoke_key(key_id: str, ctx: CtxDep, who: Admin, request: Request) -> KeyPublic:
    """Revoke one of the caller's tenant's keys (admin)."""
    try:
        row = ctx.keys.revoke(key_id, tenant=who.tenant)
    except NotFoundError:
        raise HTTPException(status_code=404, detail="key not found") from None
    record_audit(
        ctx.db,
        actor=who.key_id,
        tenant=who.tenant,
        action="key.revoke",
        resource=key_id,
        outcome="ok",
        request_id=request.state.request_id,
    )
    return KeyPublic(**_public(row))


__all__ = ["router"]
