"""Fixtures for service tests: an app on a temp SQLite file (or PostgreSQL), keys, a fake guard."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from svc_helpers import SIMULATED, Env, FakeGuard

from privacy_finetuner.service.app import create_app
from privacy_finetuner.service.deps import AppContext
from privacy_finetuner.service.settings import Settings
from privacy_finetuner.service.testing import require_service, unique_name


def _make_keys(ctx: AppContext) -> dict[str, str]:
    spec = {
        "admin": ("acme", "admin"),
        "submit": ("acme", "submit,read"),
        "read": ("acme", "read"),
        "guard": ("acme", "guard"),
        "other": ("globex", "admin"),
        "ops": ("system", "admin"),
    }
    return {name: ctx.keys.create(tenant=t, scopes=s)[0] for name, (t, s) in spec.items()}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'svc.db'}",
        runs_dir=tmp_path / "runs",
        job_function=SIMULATED,
        redis_url=None,
        heartbeat_interval_s=0.2,
        heartbeat_timeout_s=2.0,
        reaper_interval_s=0.5,
        log_requests=False,
    )


@pytest.fixture
def make_env(settings: Settings) -> Iterator[Callable[..., Env]]:
    opened: list[TestClient] = []

    def factory(runner: Any = None, **overrides: Any) -> Env:
        s = settings.model_copy(update=overrides)
        kwargs: dict[str, Any] = {"guard": FakeGuard()}
        if runner is not None:
            kwargs["runner"] = runner
        else:
            kwargs["runner"] = None
        app = create_app(s, **kwargs)
        client = TestClient(app)
        client.__enter__()
        opened.append(client)
        ctx: AppContext = app.state.ctx
        return Env(app=app, client=client, ctx=ctx, keys=_make_keys(ctx))

    yield factory
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    """An app that records jobs but runs none."""
    return make_env()


@pytest.fixture
def pg_settings(settings: Settings) -> Iterator[Settings]:
    url = require_service("TEST_POSTGRES_URL")
    schema = unique_name("pf_svc")
    yield settings.model_copy(update={"database_url": url, "database_schema": schema})
    from privacy_finetuner.ledger import Database

    Database(url, schema=schema).drop_schema()
