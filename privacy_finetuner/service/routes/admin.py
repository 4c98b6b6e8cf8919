"""Operations: ``/metrics`` (Prometheus) and the tenant's audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from privacy_finetuner.ledger.models import AuditEvent
from privacy_finetuner.service.deps import CtxDep, PageParams, require
from privacy_finetuner.service.schemas import ERROR_RESPONSES, AuditEventPublic, Page
from privacy_finetuner.service.security import Principal

router = APIRouter(tags=["operations"], responses=ERROR_RESPONSES)

Admin = Annotated[Principal, require("admin")]
Paging = Annotated[PageParams, Depends()]


@router.get("/metrics", response_class=Response)
async def metrics(ctx: CtxDep, who: Admin) -> Response:
    """Prometheus metrics (admin key; the operator tenant sees every tenant's data sets)."""
    tenant = None if who.tenant == ctx.settings.operator_tenant else who.tenant
    body = await run_in_threadpool(ctx.metrics.render, tenant)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/audit", response_model=Page)
def audit_log(ctx: CtxDep, who: Admin, page: Paging) -> Page:
    """Who did what in this tenant, newest first."""
    with ctx.db.read_session() as session:
        cond = AuditEvent.tenant == who.tenant
        total = session.scalar(select(func.count()).select_from(AuditEvent).where(cond))
        rows = session.scalars(
            select(AuditEvent)
            .where(cond)
            .order_by(AuditEvent.id.desc())
            .limit(page.limit)
            .offset(page.offset)
        ).all()
        items = [AuditEventPublic.model_validate(r, from_attributes=True) for r in rows]
    return Page(items=items, count=int(total or 0), limit=page.limit, offset=page.offset)


__all__: list[str] = ["router"]
