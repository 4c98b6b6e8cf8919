"""Jobs: submit against a data set's budget, watch, cancel, fetch the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, select

from privacy_finetuner.errors import BudgetExceededError, ConfigError, NotFoundError
from privacy_finetuner.ledger.budget import epsilon_of
from privacy_finetuner.ledger.models import Job
from privacy_finetuner.service.audit import record_audit
from privacy_finetuner.service.deps import AppContext, CtxDep, PageParams, require
from privacy_finetuner.service.jobspec import (
    check_submitted_config,
    plan_job,
    validate_job_config,
)
from privacy_finetuner.service.schemas import ERROR_RESPONSES, JobCreate, JobPublic, Page
from privacy_finetuner.service.security import Principal

router = APIRouter(
    prefix="/v1/jobs",
    tags=["jobs"],
    responses={
        **ERROR_RESPONSES,
        409: {"description": "Refused by the budget, or not in a state that allows it"},
    },
)

Submitter = Annotated[Principal, require("submit")]
Reader = Annotated[Principal, require("read")]
Paging = Annotated[PageParams, Depends()]


def job_public(job: Job) -> JobPublic:
    """A job with its live ε (pessimistic grid while running, precise once finished)."""
    eps = epsilon_of(job.charged, delta=job.delta, precise=not job.active)
    return JobPublic(
        id=job.id,
        dataset_id=job.dataset_id,
        state=job.state,
        progress=min(1.0, job.steps_done / job.steps_planned) if job.steps_planned else 0.0,
        steps_done=job.steps_done,
        steps_planned=job.steps_planned,
        epsilon=eps,
        delta=job.delta,
        planned_dataset_epsilon=job.planned_epsilon,
        noise_multiplier=job.noise_multiplier,
        sample_rate=job.sample_rate,
        clip_norm=job.clip_norm,
        attempts=job.attempts,
        cancel_requested=job.cancel_requested,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        error=job.error,
        result=job.result,
    )


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Validation errors without the offending input values (they may be sensitive)."""
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def _audit(
    ctx: AppContext,
    request: Request,
    who: Principal,
    action: str,
    resource: str | None,
    outcome: str,
    **detail: Any,
) -> None:
    record_audit(
        ctx.db,
        actor=who.key_id,
        tenant=who.tenant,
        action=action,
        resource=resource,
        outcome=outcome,
        request_id=request.state.request_id,
        detail=detail,
    )


@router.post(
    "",
    status_code=202,
    response_model=JobPublic,
    responses={409: {"description": "Refused: the privacy budget would be exceeded"}},
)
def submit_job(body: JobCreate, ctx: CtxDep, who: Submitter, request: Request) -> Any:
    """Validate the config, plan its DP steps, reserve them on the data set's budget, queue it."""
    try:
        ds = ctx.ledger.get_dataset(body.dataset_id, tenant=who.tenant)
    except NotFoundError:
        raise HTTPException(status_code=404, detail="data set not found") from None
    try:
        check_submitted_config(body.config)
        config = validate_job_config(body.config, base=ctx.base_config)
        if ds.data_path:
            config.data.path = Path(ds.data_path)
        plan = plan_job(config, num_units=ds.num_units)
    except ValidationError as exc:
        _audit(ctx, request, who, "job.submit", ds.id, "invalid")
        return JSONResponse({"detail": _errors(exc)}, status_code=422)
    except ConfigError as exc:
        _audit(ctx, request, who, "job.submit", ds.id, "invalid")
        raise HTTPException(status_code=422, detail=str(exc)) from None
    floor = ctx.settings.noise_multiplier_floor
    if floor is not None and any(s.noise_multiplier < floor for s in plan.segments):
        raise HTTPException(status_code=422, detail=f"noise multiplier below the floor {floor:g}")
    try:
        job = ctx.ledger.submit_job(
            dataset_id=ds.id,
            tenant=who.tenant,
            planned=plan.segments,
            config=config.model_dump(mode="json"),
            clip_norm=plan.clip_norm,
            delta=plan.delta,
            privacy_unit=plan.privacy_unit,
            users=body.users,
            created_by=who.key_id,
        )
    except BudgetExceededError as exc:
        _audit(
            ctx,
            request,
            who,
            "job.submit",
            ds.id,
            "refused",
            requested_epsilon=exc.requested_epsilon,
            budget_epsilon=exc.budget_epsilon,
        )
        return JSONResponse(
            {
                "detail": str(exc),
                "requested_epsilon": exc.requested_epsilon,
                "budget_epsilon": exc.budget_epsilon,
            },
            status_code=409,
        )
    except ConfigError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    _audit(
        ctx,
        request,
        who,
        "job.submit",
        job.id,
        "accepted",
        dataset_id=ds.id,
        planned_dataset_epsilon=job.planned_epsilon,
    )
    if ctx.runner is not None:
        ctx.runner.submit(job.id)
    return job_public(job)


@router.get("", response_model=Page)
def list_jobs(
    ctx: CtxDep,
    who: Reader,
    page: Paging,
    dataset_id: Annotated[str | None, Query(max_length=40)] = None,
    state: Annotated[str | None, Query(max_length=16)] = None,
) -> Page:
    """The tenant's jobs, newest first."""
    with ctx.db.read_session() as session:
        cond = [Job.tenant == who.tenant]
        if dataset_id:
            cond.append(Job.dataset_id == dataset_id)
        if state:
            cond.append(Job.state == state)
        total = session.scalar(select(func.count()).select_from(Job).where(*cond))
        rows = session.scalars(
            select(Job)
            .where(*cond)
            .order_by(Job.created_at.desc(), Job.id)
            .limit(page.limit)
            .offset(page.offset)
        ).all()
    return Page(
        items=[job_public(j) for j in rows],
        count=int(total or 0),
        limit=page.limit,
        offset=page.offset,
    )


def _get(ctx: AppContext, job_id: str, tenant: str) -> Job:
    with ctx.db.read_session() as session:
        job = session.get(Job, job_id)
    if job is None or job.tenant != tenant:
        raise HTTPException(status_code=404, detail="job not found")
    return job


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: str, ctx: CtxDep, who: Reader) -> JobPublic:
    """State, progress and ε spent so far."""
    return job_public(_get(ctx, job_id, who.tenant))


@router.post("/{job_id}/cancel", status_code=202, response_model=JobPublic)
def cancel_job(job_id: str, ctx: CtxDep, who: Submitter, request: Request) -> JobPublic:
    """Cancel a queued job now, or ask a running one to stop after its current step."""
    job = _get(ctx, job_id, who.tenant)
    if not job.active:
        raise HTTPException(status_code=409, detail=f"job is already {job.state}")
    with ctx.db.write_session() as session:
        row = session.get(Job, job_id)
        if row is not None:
            row.cancel_requested = True
    ctx.ledger.finish_job(job_id, state="cancelled", expect_state="queued")
    _audit(ctx, request, who, "job.cancel", job_id, "ok")
    return job_public(_get(ctx, job_id, who.tenant))


@router.get("/{job_id}/report", responses={409: {"description": "Job not finished"}})
def get_report(job_id: str, ctx: CtxDep, who: Reader) -> Response:
    """The job's privacy report (JSON, or the file the trainer wrote)."""
    job = _get(ctx, job_id, who.tenant)
    if job.active:
        raise HTTPException(status_code=409, detail=f"job is {job.state}; no report yet")
    runs = Path(ctx.settings.runs_dir).resolve()
    candidates = [Path(job.report_path)] if job.report_path else []
    candidates.append(runs / job.id / "report.json")
    for path in candidates:
        resolved = path.resolve()
        if resolved.is_file() and resolved.is_relative_to(runs):
            text = resolved.read_text(encoding="utf-8")
            if resolved.suffix == ".json":
                return JSONResponse(
                    {"job": job_public(job).model_dump(mode="json"), "report": json.loads(text)}
                )
            return PlainTextResponse(text, media_type="text/markdown")
    raise HTTPException(status_code=404, detail="no report for this job")
