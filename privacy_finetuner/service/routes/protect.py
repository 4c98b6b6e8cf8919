"""``POST /v1/guard/protect``: the context guard as a service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from starlette.concurrency import run_in_threadpool

from privacy_finetuner.service.deps import CtxDep, require
from privacy_finetuner.service.schemas import ERROR_RESPONSES, ProtectRequest, ProtectResponse
from privacy_finetuner.service.security import Principal

router = APIRouter(
    prefix="/v1/guard",
    tags=["guard"],
    responses={**ERROR_RESPONSES, 503: {"description": "The context guard is not installed"}},
)

Guarded = Annotated[Principal, require("guard")]

#: Texts up to this size are protected on the event loop (a few ms of CPU: cheaper than a
#: thread hop, and threads would not run Python code in parallel anyway); longer ones in a thread
#: so one big text cannot stall every other request of the worker.
INLINE_CHARS = 4096


@router.post("/protect", response_model=ProtectResponse)
async def protect(body: ProtectRequest, ctx: CtxDep, who: Guarded) -> ProtectResponse:
    """Replace personal data in ``text`` with the configured strategies (default: redact)."""
    if len(body.text) > ctx.settings.max_guard_chars:
        raise HTTPException(
            status_code=413, detail=f"text longer than {ctx.settings.max_guard_chars} characters"
        )
    if ctx.guard is None:
        raise HTTPException(status_code=503, detail="the context guard is not installed")
    result: Any
    if len(body.text) <= INLINE_CHARS:
        result = ctx.guard.protect(body.text)
    else:
        result = await run_in_threadpool(ctx.guard.protect, body.text)
    findings = getattr(result, "findings", None)
    count = len(findings) if isinstance(findings, (list, tuple)) else None
    return ProtectResponse(text=result.text, findings=count)
