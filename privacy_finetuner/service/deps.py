"""Application context and FastAPI dependencies (``Annotated`` aliases, as in the template)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from privacy_finetuner.errors import AuthError
from privacy_finetuner.ledger.db import Database
from privacy_finetuner.ledger.store import Ledger
from privacy_finetuner.service.metrics import ServiceMetrics
from privacy_finetuner.service.runner import Runner
from privacy_finetuner.service.security import FailureLimiter, KeyStore, Principal
from privacy_finetuner.service.settings import Settings

__all__ = [
    "AppContext",
    "CtxDep",
    "PageParams",
    "get_ctx",
    "require",
]


@dataclass
class AppContext:
    """Everything a request handler may need, built once by ``create_app``."""

    settings: Settings
    db: Database
    ledger: Ledger
    keys: KeyStore
    limiter: FailureLimiter
    metrics: ServiceMetrics
    runner: Runner | None
    guard: Any
    base_config: dict[str, Any]


def get_ctx(request: Request) -> AppContext:
    """The app's context."""
    ctx: AppContext = request.app.state.ctx
    return ctx


CtxDep = Annotated[AppContext, Depends(get_ctx)]


def _presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return None


_log = logging.getLogger("privacy_finetuner.service.auth")


def _fail(ctx: AppContext, client: str, reason: str) -> None:
    """Count and log a failed authentication (client address and reason; never the key)."""
    ctx.limiter.record(client)
    ctx.metrics.auth_failures.labels(reason).inc()
    _log.warning("authentication failed", extra={"client": client, "action": reason})


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def require(scope: str) -> Any:
    """A dependency that authenticates the caller and checks ``scope``."""

    async def dependency(request: Request) -> Principal:
        ctx = get_ctx(request)
        client = _client(request)
        if ctx.limiter.blocked(client):
            ctx.metrics.auth_failures.labels("rate_limited").inc()
            raise HTTPException(
                status_code=429,
                detail="too many failed authentications; retry later",
                headers={"Retry-After": str(int(ctx.settings.auth_failure_window_s))},
            )
        key = _presented_key(request)
        if not key:
            _fail(ctx, client, "missing")
            raise HTTPException(
                status_code=401, detail="API key required", headers={"WWW-Authenticate": "Bearer"}
            )
        try:
            found = ctx.keys.cached(key)
            if found is None:
                found = await run_in_threadpool(ctx.keys.verify, key)
            principal: Principal = found
        except AuthError:
            _fail(ctx, client, "invalid")
            raise HTTPException(
                status_code=401, detail="invalid API key", headers={"WWW-Authenticate": "Bearer"}
            ) from None
        request.scope.setdefault("state", {})["key_id"] = principal.key_id
        if not principal.allows(scope):
            ctx.metrics.auth_failures.labels("forbidden").inc()
            raise HTTPException(status_code=403, detail=f"API key lacks the '{scope}' scope")
        return principal

    return Depends(dependency)


class PageParams:
    """``?limit=&offset=`` with the server's maximum page size."""

    def __init__(
        self,
        request: Request,
        limit: Annotated[int, Query(ge=1, le=1000, description="Items per page.")] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000, description="Items to skip.")] = 0,
    ) -> None:
        self.limit = min(limit, get_ctx(request).settings.page_size_max)
        self.offset = offset
