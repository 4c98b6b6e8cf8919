"""Data sets: register, list, show budget, read the ledger."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from sqlalchemy import func, select

from privacy_finetuner.errors import ConfigError, NotFoundError
from privacy_finetuner.ledger.models import Dataset, LedgerEntry
from privacy_finetuner.service.audit import record_audit
from privacy_finetuner.service.deps import AppContext, CtxDep, PageParams, require
from privacy_finetuner.service.schemas import (
    ERROR_RESPONSES,
    DatasetCreate,
    DatasetPublic,
    LedgerEntryPublic,
    Page,
)
from privacy_finetuner.service.security import Principal

router = APIRouter(
    prefix="/v1/datasets",
    tags=["datasets"],
    responses={**ERROR_RESPONSES, 409: {"description": "A data set with this name exists"}},
)

Admin = Annotated[Principal, require("admin")]
Reader = Annotated[Principal, require("read")]
Paging = Annotated[PageParams, Depends()]


def dataset_public(ctx: AppContext, ds: Dataset) -> DatasetPublic:
    """A data set with its budget status."""
    status = ctx.ledger.budget(ds.id)
    return DatasetPublic(
        id=ds.id,
        name=ds.name,
        tenant=ds.tenant,
        privacy_unit=ds.privacy_unit,
        num_units=ds.num_units,
        description=ds.description,
        created_at=ds.created_at,
        budget_epsilon=ds.budget_epsilon,
        delta=ds.budget_delta,
        spent_epsilon=status.spent_epsilon,
        committed_epsilon=status.committed_epsilon,
        remaining_epsilon=status.remaining_epsilon,
        active_jobs=status.active_jobs,
        ledger_entries=ds.entry_count,
        ledger_head=ds.head_hash,
    )


@router.post("", status_code=201, response_model=DatasetPublic)
def create_dataset(body: DatasetCreate, ctx: CtxDep, who: Admin, request: Request) -> DatasetPublic:
    """Register a data set with its lifetime (ε, δ) budget (admin)."""
    try:
        ds = ctx.ledger.register_dataset(
            tenant=who.tenant,
            name=body.name,
            budget_epsilon=body.budget_epsilon,
            budget_delta=body.budget_delta,
            privacy_unit=body.privacy_unit,
            num_units=body.num_units,
            data_path=body.data_path,
            description=body.description,
            actor=who.key_id,
        )
    except ConfigError as exc:
        raise HTTPException(
            status_code=409 if "exists" in str(exc) else 422, detail=str(exc)
        ) from None
    record_audit(
        ctx.db,
        actor=who.key_id,
        tenant=who.tenant,
        action="dataset.create",
        resource=ds.id,
        outcome="ok",
        request_id=request.state.request_id,
        detail={
            "name": ds.name,
            "budget_epsilon": ds.budget_epsilon,
            "budget_delta": ds.budget_delta,
        },
    )
    return dataset_public(ctx, ds)


@router.get("", response_model=Page)
def list_datasets(ctx: CtxDep, who: Reader, page: Paging) -> Page:
    """The caller's tenant's data sets, one page at a time."""
    rows, total = ctx.ledger.list_datasets(tenant=who.tenant, limit=page.limit, offset=page.offset)
    return Page(
        items=[dataset_public(ctx, ds) for ds in rows],
        count=total,
        limit=page.limit,
        offset=page.offset,
    )


def _get(ctx: AppContext, dataset_id: str, tenant: str) -> Dataset:
    try:
        return ctx.ledger.get_dataset(dataset_id, tenant=tenant)
    except NotFoundError:
        raise HTTPException(status_code=404, detail="data set not found") from None


@router.get("/{dataset_id}", response_model=DatasetPublic)
def get_dataset(dataset_id: str, ctx: CtxDep, who: Reader) -> DatasetPublic:
    """A data set and its budget: spent, committed (with running jobs' reservations), left."""
    return dataset_public(ctx, _get(ctx, dataset_id, who.tenant))


@router.get("/{dataset_id}/ledger", response_model=Page)
def get_ledger(dataset_id: str, ctx: CtxDep, who: Reader, page: Paging) -> Page:
    """The data set's hash-chained ledger entries, oldest first."""
    _get(ctx, dataset_id, who.tenant)
    with ctx.db.read_session() as session:
        total = session.scalar(
            select(func.count())
            .select_from(LedgerEntry)
            .where(LedgerEntry.dataset_id == dataset_id)
        )
        rows = session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.dataset_id == dataset_id)
            .order_by(LedgerEntry.seq)
            .limit(page.limit)
            .offset(page.offset)
        ).all()
        items = [LedgerEntryPublic.model_validate(r, from_attributes=True) for r in rows]
    return Page(items=items, count=int(total or 0), limit=page.limit, offset=page.offset)


@router.get("/{dataset_id}/users/{user_id}")
def get_user_spend(dataset_id: str, user_id: str, ctx: CtxDep, who: Reader) -> dict[str, object]:
    """ε spent on one user: the PLD composition of the jobs that trained on them.

    Jobs submitted without a ``users`` list count for every user.
    """
    ds = _get(ctx, dataset_id, who.tenant)
    spent = ctx.ledger.spent_epsilon(ds.id, user=user_id)
    return {
        "dataset_id": ds.id,
        "user_id": user_id,
        "spent_epsilon": spent,
        "budget_epsilon": ds.budget_epsilon,
        "delta": ds.budget_delta,
    }
