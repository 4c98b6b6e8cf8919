"""Application context and FastAPI dependencies (``Annotated`` aliases, as in the template)."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from privacy_finetuner.errors import AuthError
from privacy_finetuner.ledger.db import Database
from privacy_finetuner.ledger.store import Ledger
from privacy_finetuner.service.jobspec import ServerPolicy
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
    policy: ServerPolicy


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


def _fail(ctx: AppContext, client: str, key_id: str, reason: str) -> None:
    """Count and log a failed authentication (client address and reason; never the key)."""
    ctx.limiter.record(f"{client}|{key_id}")
    ctx.metrics.auth_failures.labels(reason).inc()
    _log.warning("authentication failed", extra={"client": client, "action": reason})


def _trusted(host: str, proxies: list[str]) -> bool:
    if host in proxies:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    for entry in proxies:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def client_address(request: Request, trusted_proxies: list[str]) -> str:
    """The caller's address: the TCP peer, or, only when the peer is a trusted proxy
    (``PF_TRUSTED_PROXIES``), the right-most ``X-Forwarded-For`` hop that is not one."""
    peer = request.client.host if request.client else "unknown"
    if not trusted_proxies or not _trusted(peer, trusted_proxies):
        return peer
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted_proxies):
            return hop[:64]
    return peer


def _key_id(presented: str) -> str:
    """The public id part of a presented key (for the limiter), or "-" when malformed."""
    if presented.startswith("pfk_"):
        key_id = presented[4:].partition("_")[0]
        if 0 < len(key_id) <= 32 and key_id.isalnum():
            return key_id
    return "-"


def require(scope: str) -> Any:
    """A dependency that authenticates the caller and checks ``scope``.

    The key is verified *first*: a valid key is never refused by the failed-login limiter
    (behind an ingress all clients can share one address, and 20 bad keys anywhere locked every
    valid key out). Failures are limited per (client address, presented key id).
    """

    async def dependency(request: Request) -> Principal:
        ctx = get_ctx(request)
        client = client_address(request, ctx.settings.trusted_proxies)
        key = _presented_key(request)
        principal: Principal | None = None
        if key:
            try:
                principal = ctx.keys.cached(key)
                if principal is None:
                    principal = await run_in_threadpool(ctx.keys.verify, key)
            except AuthError:
                principal = None
        if principal is None:
            key_id = _key_id(key) if key else "-"
            if ctx.limiter.blocked(f"{client}|{key_id}"):
                ctx.metrics.auth_failures.labels("rate_limited").inc()
                raise HTTPException(
                    status_code=429,
                    detail="too many failed authentications; retry later",
                    headers={"Retry-After": str(int(ctx.settings.auth_failure_window_s))},
                )
            _fail(ctx, client, key_id, "invalid" if key else "missing")
            raise HTTPException(
                status_code=401,
                detail="invalid API key" if key else "API key required",
                headers={"WWW-Authenticate": "Bearer"},
            )
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
