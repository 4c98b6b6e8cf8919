"""Request size limits, /metrics content, guard endpoint, request ids, PostgreSQL-backed app."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from svc_helpers import Env, tiny_config

from privacy_finetuner.service.settings import Settings


def test_body_over_limit_is_413(make_env: Callable[..., Env]) -> None:
    env = make_env(max_body_bytes=4096)
    big = {"text": "a" * 5000}
    r = env.client.post("/v1/guard/protect", json=big, headers=env.h("guard"))
    assert r.status_code == 413
    r = env.client.post("/v1/datasets", json={"name": "x" * 5000}, headers=env.h("admin"))
    assert r.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield b'{"text": "'
        for _ in range(10):
            yield b"a" * 1000
        yield b'"}'

    r = env.client.post(
        "/v1/guard/protect",
        content=chunks(),
        headers={**env.h("guard"), "content-type": "application/json"},
    )
    assert r.status_code == 413


def test_guard_text_limit_and_protect(make_env: Callable[..., Env]) -> None:
    env = make_env(max_guard_chars=100)
    r = env.client.post(
        "/v1/guard/protect", json={"text": "my secret is secret"}, headers=env.h("guard")
    )
    assert r.status_code == 200
    assert r.json() == {"text": "my [REDACTED] is [REDACTED]", "findings": 2}
    assert r.headers["x-request-id"]
    r = env.client.post("/v1/guard/protect", json={"text": "x" * 101}, headers=env.h("guard"))
    assert r.status_code == 413


def test_request_id_is_echoed(env: Env) -> None:
    r = env.client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"


def test_metrics_exposes_the_monitoring_series(env: Env) -> None:
    c = env.client
    ds = c.post(
        "/v1/datasets",
        json={"name": "m", "budget_epsilon": 3, "budget_delta": 1e-5},
        headers=env.h("admin"),
    ).json()
    c.post(
        "/v1/jobs", json={"dataset_id": ds["id"], "config": tiny_config(5)}, headers=env.h("submit")
    )
    c.get("/v1/datasets", headers={"X-API-Key": "wrong"})
    tenant_view = c.get("/metrics", headers=env.h("admin")).text
    # request counts span every tenant: a tenant admin sees only its own ledger gauges
    assert "http_requests_total" not in tenant_view and "auth_failures_total" not in tenant_view
    assert f'privacy_epsilon_budget{{dataset="{ds["id"]}",name="m",tenant="acme"}} 3.0' in (
        tenant_view
    )
    text = c.get("/metrics", headers=env.h("ops")).text
    for series in (
        'http_requests_total{method="POST",route="/v1/datasets",status="201"}',
        'http_request_duration_seconds_bucket{le="0.05",route="/v1/datasets"}',
        'http_request_errors_total{route="/v1/datasets",status="401"}',
        'auth_failures_total{reason="invalid"}',
        f'privacy_epsilon_budget{{dataset="{ds["id"]}",name="m",tenant="acme"}} 3.0',
        f'privacy_epsilon_spent{{dataset="{ds["id"]}",name="m",tenant="acme"}} 0.0',
        "privacy_epsilon_remaining{",
        'jobs{state="queued"} 1.0',
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
    ):
        assert series in text, series


def test_running_job_noise_and_clip_are_exported(env: Env) -> None:
    from sqlalchemy import update

    from privacy_finetuner.ledger.models import Job

    c = env.client
    ds = c.post(
        "/v1/datasets",
        json={"name": "r", "budget_epsilon": 3, "budget_delta": 1e-5},
        headers=env.h("admin"),
    ).json()
    job = c.post(
        "/v1/jobs",
        json={"dataset_id": ds["id"], "config": tiny_config(5, sigma=1.25)},
        headers=env.h("submit"),
    ).json()
    with env.ctx.db.write_session() as session:
        session.execute(update(Job).where(Job.id == job["id"]).values(state="running"))
    env.ctx.metrics.ledger._cached = None  # type: ignore[union-attr]
    text = c.get("/metrics", headers=env.h("admin")).text
    assert (
        f'job_noise_multiplier{{dataset="{ds["id"]}",job="{job["id"]}",tenant="acme"}} 1.25' in text
    )
    assert f'job_clip_norm{{dataset="{ds["id"]}",job="{job["id"]}",tenant="acme"}} 1.0' in text


@pytest.mark.postgres
def test_app_on_postgres(
    make_env: Callable[..., Env], pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = make_env(**pg_settings.model_dump(include={"database_url", "database_schema"}))
    c = env.client
    ds = c.post(
        "/v1/datasets",
        json={"name": "pg", "budget_epsilon": 2.0, "budget_delta": 1e-5},
        headers=env.h("admin"),
    ).json()
    ok: Any = c.post(
        "/v1/jobs", json={"dataset_id": ds["id"], "config": tiny_config(5)}, headers=env.h("submit")
    )
    assert ok.status_code == 202
    refused = c.post(
        "/v1/jobs",
        json={"dataset_id": ds["id"], "config": tiny_config(400)},
        headers=env.h("submit"),
    )
    assert refused.status_code == 409
    assert c.get("/readyz").json()["checks"]["database"] == "ok"


def test_readyz_is_503_when_redis_is_down(make_env: Callable[..., Env]) -> None:
    env = make_env(redis_url="redis://127.0.0.1:1/0")
    r = env.client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["database"] == "ok"
    assert r.json()["checks"]["redis"].startswith("unavailable")


def test_sentry_only_with_dsn_and_sdk(
    make_env: Callable[..., Env], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import types

    calls: list[dict[str, Any]] = []
    fake = types.ModuleType("sentry_sdk")
    fake.init = lambda **kw: calls.append(kw)  # type: ignore[attr-defined]
    make_env()  # no DSN: not initialised
    assert calls == []
    monkeypatch.setitem(sys.modules, "sentry_sdk", fake)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    make_env(sentry_dsn=SecretStr("https://public@sentry.example/1"))
    assert len(calls) == 1 and calls[0]["send_default_pii"] is False


def test_served_workers_freeze_the_startup_heap(settings: Settings) -> None:
    """Served workers move the start-up heap out of the cyclic GC (the p99 fix); apps built for
    tests do not, since frozen objects are never freed."""
    import gc

    from fastapi.testclient import TestClient

    from privacy_finetuner.service.app import create_app

    gc.unfreeze()
    with TestClient(create_app(settings, runner=None)):
        assert gc.get_freeze_count() == 0
    try:
        with TestClient(create_app(settings, runner=None, freeze_gc=True)):
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
