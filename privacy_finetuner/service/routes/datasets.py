"""Data sets: register, list, show budget, read the ledger."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, select

from privacy_finetuner.errors import ConfigError, NotFoundError
from privacy_finetuner.ledger.models import Dataset, Job, LedgerEntry
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
from privacy_finetuner.service.uploads import (
    UploadError,
    UploadTooLarge,
    receive_upload,
    tenant_dir,
)

router = APIRouter(
    prefix="/v1/datasets",
    tags=["datasets"],
    responses={**ERROR_RESPONSES, 409: {"description": "A data set with this name exists"}},
)

Admin = Annotated[Principal, require("admin")]
Reader = Annotated[Principal, require("read")]
Paging = Annotated[PageParams, Depends()]
_log = logging.getLogger("privacy_finetuner.service.datasets")
#: One answer for every refused server path: outside the root, missing, a directory, a symlink
#: out of the root. It never says which, so it cannot be used to probe what exists.
_PATH_REFUSED = "data_path is not an allowed data file"


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
        has_data=ds.data_path is not None,
        upload=ds.upload_stats,
    )


def planning_units(ds: Dataset) -> int | None:
    """The unit count jobs on ``ds`` plan q from: the upload's count, else the registered one."""
    if ds.upload_stats and isinstance(ds.upload_stats.get("units"), int):
        return int(ds.upload_stats["units"])
    return ds.num_units


def confined_data_path(ctx: AppContext, raw: str) -> str:
    """``raw`` resolved (symlinks followed) if it is a regular file inside ``PF_DATA_ROOT``.

    Raises:
        HTTPException: 422 with one message for every refusal (see ``_PATH_REFUSED``).
    """
    root = ctx.settings.data_root
    if root is None:
        raise HTTPException(status_code=422, detail="registration by server path is disabled")
    try:
        base = Path(root).resolve(strict=True)
        candidate = Path(raw)
        if not candidate.is_absolute():
            candidate = base / candidate
        resolved = candidate.resolve(strict=True)
        ok = resolved.is_relative_to(base) and resolved.is_file()
    except (OSError, RuntimeError, ValueError):
        ok = False
    if not ok:
        raise HTTPException(status_code=422, detail=_PATH_REFUSED)
    return str(resolved)


@router.post("", status_code=201, response_model=DatasetPublic)
def create_dataset(body: DatasetCreate, ctx: CtxDep, who: Admin, request: Request) -> DatasetPublic:
    """Register a data set with its lifetime (ε, δ) budget (admin).

    Tenants register without a path and upload with ``POST /v1/datasets/{id}/files``.
    ``data_path`` (and ``tenant``) are for operator keys only, confined to ``PF_DATA_ROOT``.
    """
    operator = who.tenant == ctx.settings.operator_tenant
    if (body.data_path is not None or body.tenant is not None) and not operator:
        raise HTTPException(
            status_code=403,
            detail="data_path and tenant are operator-only; upload data to the data set instead",
        )
    data_path = confined_data_path(ctx, body.data_path) if body.data_path is not None else None
    tenant = body.tenant or who.tenant
    try:
        ds = ctx.ledger.register_dataset(
            tenant=tenant,
            name=body.name,
            budget_epsilon=body.budget_epsilon,
            budget_delta=body.budget_delta,
            privacy_unit=body.privacy_unit,
            num_units=body.num_units,
            data_path=data_path,
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
        tenant=tenant,
        action="dataset.create",
        resource=ds.id,
        outcome="ok",
        request_id=request.state.request_id,
        detail={
            "name": ds.name,
            "budget_epsilon": ds.budget_epsilon,
            "budget_delta": ds.budget_delta,
            "by_path": data_path is not None,
        },
    )
    return dataset_public(ctx, ds)


@router.post(
    "/{dataset_id}/files",
    status_code=201,
    response_model=DatasetPublic,
    responses={
        409: {"description": "The data set already has data or jobs"},
        413: {"description": "Upload too large"},
        422: {"description": "An invalid line (line number, error code, field; no values)"},
    },
)
async def upload_file(dataset_id: str, ctx: CtxDep, who: Admin, request: Request) -> Any:
    """Upload the data set's traces: JSONL, or gzip-compressed JSONL, streamed (admin).

    Every line is validated with the trace schema as it arrives; the file is stored in the
    tenant's own storage folder and its counts (traces, users, PII findings per type) are
    recorded. Jobs plan q from the upload's unit count (traces, or users for a per-user set).
    """
    from starlette.concurrency import run_in_threadpool

    ds = await run_in_threadpool(_get, ctx, dataset_id, who.tenant)
    if ds.data_path is not None:
        raise HTTPException(status_code=409, detail="the data set already has data")
    storage = Path(ctx.settings.storage_root).resolve()
    target = tenant_dir(storage, ds.tenant) / ds.id / "traces.jsonl"
    guard = ctx.guard
    scan = getattr(guard, "find", None)
    try:
        stats = await receive_upload(
            request.stream(), target, limit=ctx.settings.max_upload_bytes, scan=scan
        )
    except UploadTooLarge:
        return JSONResponse(
            {"detail": f"upload larger than {ctx.settings.max_upload_bytes} bytes"},
            status_code=413,
        )
    except UploadError as exc:
        return JSONResponse(
            {"detail": str(exc), "line": exc.line, "code": exc.code, "field": exc.field},
            status_code=422,
        )
    units = stats.users + stats.traces_without_user if ds.privacy_unit == "user" else stats.traces
    stats_json = {**stats.to_dict(), "units": units}

    def store() -> Dataset:
        with ctx.db.write_session() as session:
            row = session.get(Dataset, ds.id)
            busy = session.scalar(
                select(func.count()).select_from(Job).where(Job.dataset_id == ds.id)
            )
            if row is None or row.data_path is not None or busy:
                raise HTTPException(status_code=409, detail="the data set already has data or jobs")
            row.data_path = str(target)
            row.upload_stats = stats_json
            session.flush()
            return row

    try:
        row = await run_in_threadpool(store)
    except HTTPException:
        target.unlink(missing_ok=True)
        raise
    record_audit(
        ctx.db,
        actor=who.key_id,
        tenant=who.tenant,
        action="dataset.upload",
        resource=ds.id,
        outcome="ok",
        request_id=request.state.request_id,
        detail={"traces": stats.traces, "bytes": stats.bytes},
    )
    return await run_in_threadpool(dataset_public, ctx, row)


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
    """ε spent on one user of a per-user data set (every job trains on every user).

    Refused (409) on a per-example data set, whose ledger does not bound a user's ε.
    """
    ds = _get(ctx, dataset_id, who.tenant)
    try:
        spent = ctx.ledger.spent_epsilon(ds.id, user=user_id)
    except ConfigError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    return {
        "dataset_id": ds.id,
        "user_id": user_id,
        "spent_epsilon": spent,
        "budget_epsilon": ds.budget_epsilon,
        "delta": ds.budget_delta,
    }
