"""Jobs: submit against a data set's budget, watch, cancel, fetch the report."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, select

from privacy_finetuner.errors import BudgetExceededError, ConfigError, NotFoundError
from privacy_finetuner.ledger.budget import epsilon_of
from privacy_finetuner.ledger.lifecycle import request_cancel
from privacy_finetuner.ledger.models import Job
from privacy_finetuner.ledger.store import AdmissionChanged
from privacy_finetuner.service.admission import epsilon_with_limit
from privacy_finetuner.service.audit import record_audit
from privacy_finetuner.service.deps import AppContext, CtxDep, PageParams, require
from privacy_finetuner.service.jobspec import (
    apply_policy,
    check_bounds,
    check_submitted_config,
    deep_merge,
    plan_job,
)
from privacy_finetuner.service.redact import redact_paths
from privacy_finetuner.service.routes.datasets import planning_units
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
_log = logging.getLogger("privacy_finetuner.service.jobs")
_IDEMPOTENCY_RE = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")


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
        error=redact_paths(job.error) if job.error else None,
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
def submit_job(
    body: JobCreate,
    ctx: CtxDep,
    who: Submitter,
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Any:
    """Validate the config, plan its DP steps, reserve them on the data set's budget, queue it.

    The operator's policy is applied after the tenant's config is merged onto the server's
    (locked keys forced, bounds checked); ε is computed outside the ledger's write lock with a
    time limit. With an ``Idempotency-Key`` header a retried submission returns the first job.
    """
    if idempotency_key is not None and not _IDEMPOTENCY_RE.match(idempotency_key):
        raise HTTPException(status_code=422, detail="Idempotency-Key: 1-200 of [A-Za-z0-9._:-]")
    try:
        ds = ctx.ledger.get_dataset(body.dataset_id, tenant=who.tenant)
    except NotFoundError:
        raise HTTPException(status_code=404, detail="data set not found") from None
    from privacy_finetuner.config import JobConfig

    try:
        check_submitted_config(body.config, allowed_models=ctx.settings.allowed_models)
        merged = apply_policy(body.config, deep_merge(ctx.base_config, body.config), ctx.policy)
        config = JobConfig.model_validate(merged)
        check_bounds(config, ctx.policy)
        if ds.data_path:
            config.data.path = Path(ds.data_path)
        plan = plan_job(config, num_units=planning_units(ds))
        if plan.segments[0].steps > ctx.policy.bounds.get("training.max_steps", float("inf")):
            raise ConfigError("the planned steps are above the operator's bound training.max_steps")
    except ValidationError as exc:
        _audit(ctx, request, who, "job.submit", ds.id, "invalid")
        return JSONResponse({"detail": _errors(exc)}, status_code=422)
    except ConfigError as exc:
        _audit(ctx, request, who, "job.submit", ds.id, "invalid")
        raise HTTPException(status_code=422, detail=str(exc)) from None
    floor = ctx.settings.noise_multiplier_floor
    if floor is not None and any(s.noise_multiplier < floor for s in plan.segments):
        raise HTTPException(status_code=422, detail=f"noise multiplier below the floor {floor:g}")
    config_json = config.model_dump(mode="json")
    request_sha = hashlib.sha256(
        json.dumps({"dataset": ds.id, "config": config_json}, sort_keys=True).encode()
    ).hexdigest()
    if idempotency_key is not None:
        with ctx.db.read_session() as session:
            prior = session.scalars(
                select(Job).where(Job.tenant == who.tenant, Job.idempotency_key == idempotency_key)
            ).one_or_none()
        if prior is not None:
            if prior.request_sha256 != request_sha:
                raise HTTPException(
                    status_code=422, detail="Idempotency-Key was already used for another request"
                )
            return job_public(prior)  # a retry: nothing reserved or enqueued again
    timeout = ctx.settings.admission_timeout_s

    def limited(counts: dict[str, int], delta: float) -> float:
        return epsilon_with_limit(counts, delta=delta, timeout_s=timeout)

    try:
        for attempt in range(4):
            admission = (
                ctx.ledger.admission(ds.id, plan.segments, tenant=who.tenant, epsilon=limited)
                if attempt < 3
                else None  # busy data set: compute under the lock (commitments only grow)
            )
            try:
                job = ctx.ledger.submit_job(
                    dataset_id=ds.id,
                    tenant=who.tenant,
                    planned=plan.segments,
                    config=config_json,
                    clip_norm=plan.clip_norm,
                    delta=plan.delta,
                    privacy_unit=plan.privacy_unit,
                    created_by=who.key_id,
                    admission=admission,
                    idempotency_key=idempotency_key,
                    request_sha256=request_sha if idempotency_key else None,
                )
                break
            except AdmissionChanged:
                continue
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
        _audit(ctx, request, who, "job.submit", ds.id, "invalid")
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
    if ctx.runner is not None and job.state == "queued":
        try:
            ctx.runner.submit(job.id)
        except Exception:
            # The reservation is committed: answering 500 would make a client retry and spend
            # ε twice. The job stays queued; the reaper re-enqueues queued jobs it cannot find.
            _log.warning("enqueue failed; job left queued for the reaper", extra={"job_id": job.id})
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
    request_cancel(ctx.db, job_id)
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
                report = redact_paths(json.loads(text))
                return JSONResponse(
                    {"job": job_public(job).model_dump(mode="json"), "report": report}
                )
            return PlainTextResponse(redact_paths(text), media_type="text/markdown")
    raise HTTPException(status_code=404, detail="no report for this job")
