"""Liveness and readiness (no API key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from privacy_finetuner.service.deps import CtxDep

router = APIRouter(tags=["health"])

_NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"description": "The database or Redis is unreachable"}
}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


def _checks(ctx: Any) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        ctx.db.ping()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    if ctx.settings.redis_url:
        try:
            import redis

            client = redis.Redis.from_url(
                ctx.settings.redis_url, socket_connect_timeout=2, socket_timeout=2
            )
            try:
                client.ping()
            finally:
                client.close()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"unavailable: {type(exc).__name__}"
    return checks


@router.get("/readyz", responses=_NOT_READY)
async def readyz(ctx: CtxDep) -> JSONResponse:
    """Readiness: the database (and Redis, when configured) answer."""
    checks = await run_in_threadpool(_checks, ctx)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )
