"""The FastAPI application factory: ``create_app(settings)``.

``uvicorn --factory privacy_finetuner.service.app:create_app_from_env`` (what ``privacy-finetuner
serve`` runs) reads :class:`~privacy_finetuner.service.settings.Settings` from the environment.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from privacy_finetuner._version import __version__
from privacy_finetuner.errors import (
    AuthError,
    BudgetExceededError,
    ConfigError,
    NotFoundError,
    PrivacyFinetunerError,
)
from privacy_finetuner.ledger.db import Database
from privacy_finetuner.ledger.store import Ledger
from privacy_finetuner.service.admission import shared_pool
from privacy_finetuner.service.deps import AppContext
from privacy_finetuner.service.jobspec import load_base_config, load_server_policy
from privacy_finetuner.service.logs import configure_logging
from privacy_finetuner.service.metrics import ServiceMetrics
from privacy_finetuner.service.middleware import ServiceMiddleware
from privacy_finetuner.service.migrate import upgrade_database
from privacy_finetuner.service.routes import admin, datasets, health, jobs, keys, protect
from privacy_finetuner.service.runner import Runner, make_runner
from privacy_finetuner.service.security import FailureLimiter, KeyStore
from privacy_finetuner.service.settings import Settings

__all__ = ["create_app", "create_app_from_env"]

_log = logging.getLogger("privacy_finetuner.service")
_UNSET: Any = object()


def _load_guard(strategies: list[str]) -> Any:
    try:
        guard_module = importlib.import_module("privacy_finetuner.guard")
        context_guard = guard_module.ContextGuard
    except (ImportError, AttributeError):
        _log.warning("privacy_finetuner.guard not importable; /v1/guard/protect answers 503")
        return None
    return context_guard(strategies=strategies)


def _init_sentry(settings: Settings) -> None:
    if settings.sentry_dsn is None:
        return
    if importlib.util.find_spec("sentry_sdk") is None:
        _log.warning("SENTRY_DSN is set but sentry_sdk is not installed; errors are not reported")
        return
    sentry_sdk: Any = importlib.import_module("sentry_sdk")

    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        send_default_pii=False,
        include_local_variables=False,  # a frame's locals held the presented key and the DB URL
        max_request_body_size="never",
        traces_sample_rate=0.0,
        release=f"privacy-finetuner@{__version__}",
        before_send=scrub_event,
    )


_KEY_RE = re.compile(r"pfk_[A-Za-z0-9]+_[A-Za-z0-9_-]+")
_URL_PASSWORD_RE = re.compile(r"(\w+://[^:/@\s]*:)[^@\s]*@")


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _URL_PASSWORD_RE.sub(r"\1***@", _KEY_RE.sub("pfk_***", value))
    if isinstance(value, dict):
        return {
            k: "***" if str(k).lower() in _SECRET_FIELDS else _scrub(v) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


_SECRET_FIELDS = {"x-api-key", "authorization", "cookie", "vars", "data", "database_url"}


def scrub_event(event: dict[str, Any], _hint: Any = None) -> dict[str, Any]:
    """Sentry ``before_send``: no API keys, URL passwords, headers with secrets or locals."""
    scrubbed: dict[str, Any] = _scrub(event)
    return scrubbed


def _error_handlers(app: FastAPI) -> None:
    statuses: list[tuple[type[PrivacyFinetunerError], int]] = [
        (NotFoundError, 404),
        (AuthError, 401),
        (BudgetExceededError, 409),
        (ConfigError, 422),
    ]

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        for cls, status in statuses:
            if isinstance(exc, cls):
                return JSONResponse({"detail": str(exc)}, status_code=status)
        _log.error("unhandled package error", exc_info=exc)
        return JSONResponse(
            {"detail": "internal error", "request_id": request.state.request_id}, status_code=500
        )

    app.add_exception_handler(PrivacyFinetunerError, handle)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        """422 without the submitted values (FastAPI's default echoes ``input``)."""
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in errors
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    app.add_exception_handler(RequestValidationError, invalid)


def _freeze_startup_heap() -> None:
    """Move every object alive after start-up into the GC's permanent generation.

    A served worker holds ~180k long-lived objects (FastAPI, pydantic, SQLAlchemy, the guard's
    tables); a full collection scans them all, a 40-100 ms pause that stalls every in-flight
    request of that worker and was the whole p99 tail of ``/v1/guard/protect``. Frozen, they are
    never scanned again, and only request garbage is collected.
    """
    gc.collect()
    gc.freeze()


def create_app(
    settings: Settings | None = None,
    *,
    runner: Runner | None = _UNSET,
    guard: Any = _UNSET,
    freeze_gc: bool = False,
) -> FastAPI:
    """Build the service.

    Args:
        settings: configuration; read from the environment when omitted.
        runner: where accepted jobs go; default RQ when REDIS_URL is set, else in-process. Pass
            None to only record jobs (tests).
        guard: object with ``protect(text) -> .text``; default ``ContextGuard``.
        freeze_gc: freeze the start-up heap out of the cyclic GC (served workers; tests leave it
            off because frozen objects are never freed).
    """
    settings = settings or Settings()
    configure_logging(settings.log_level)
    _init_sentry(settings)
    db = Database(settings.database_url, schema=settings.database_schema)
    if settings.auto_migrate:
        upgrade_database(db)
    metrics = ServiceMetrics(db, noise_floor=settings.noise_multiplier_floor)
    base_config = load_base_config(settings.privacy_config)
    policy = load_server_policy(base_config, allow_insecure=settings.allow_insecure_jobs)
    ctx = AppContext(
        settings=settings,
        db=db,
        ledger=Ledger(db),
        keys=KeyStore(db, cache_ttl_s=settings.key_cache_ttl_s),
        limiter=FailureLimiter(
            limit=settings.auth_failure_limit, window_s=settings.auth_failure_window_s
        ),
        metrics=metrics,
        runner=make_runner(settings) if runner is _UNSET else runner,
        guard=_load_guard(settings.guard_strategies) if guard is _UNSET else guard,
        base_config=base_config,
        policy=policy,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if ctx.runner is not None:
            ctx.runner.start()
        shared_pool().warm_in_background()  # admission ε workers: spawned once per process
        if freeze_gc:
            _freeze_startup_heap()
        _log.info("service started")
        yield
        if ctx.runner is not None:
            ctx.runner.shutdown()
        db.dispose()

    app = FastAPI(
        title="privacy-finetuner",
        version=__version__,
        description="Differentially private fine-tuning as a service: data set privacy budgets "
        "enforced by a hash-chained ledger, training jobs, and the context guard.",
        lifespan=lifespan,
        # the schema lists every route and field; served only when the operator enables it
        docs_url="/docs" if settings.api_docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.api_docs else None,
    )
    app.state.ctx = ctx
    for module in (health, datasets, jobs, protect, admin, keys):
        app.include_router(module.router)
    _error_handlers(app)
    app.add_middleware(
        ServiceMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        log_requests=settings.log_requests,
        max_upload_bytes=settings.max_upload_bytes,
    )
    return app


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory``."""
    return create_app(Settings(), freeze_gc=True)
