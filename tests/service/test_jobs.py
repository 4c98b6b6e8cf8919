"""Job lifecycle with the in-process runner: submit → run → report; refusal; cancel; validation."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import update
from svc_helpers import Env, tiny_config

from privacy_finetuner.accounting import DpSegment
from privacy_finetuner.ledger import verify_ledger
from privacy_finetuner.ledger.models import Job, utcnow
from privacy_finetuner.service.jobspec import plan_job, validate_job_config
from privacy_finetuner.service.runner import InProcessRunner


def _dataset(env: Env, budget: float = 5.0, **extra: Any) -> dict[str, Any]:
    body = {
        "name": f"d{time.monotonic_ns()}",
        "budget_epsilon": budget,
        "budget_delta": 1e-5,
        **extra,
    }
    r = env.client.post("/v1/datasets", json=body, headers=env.h("admin"))
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _wait(env: Env, job_id: str, states: tuple[str, ...], timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = env.client.get(f"/v1/jobs/{job_id}", headers=env.h("read")).json()
        if job["state"] in states:
            return job  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} stuck in {job['state']}")


@pytest.fixture
def running_env(make_env: Callable[..., Env], settings: Any) -> Env:
    return make_env(runner=InProcessRunner(settings))


def test_job_runs_to_completion_and_is_charged(running_env: Env) -> None:
    env = running_env
    ds = _dataset(env)
    r = env.client.post(
        "/v1/jobs", json={"dataset_id": ds["id"], "config": tiny_config(5)}, headers=env.h("submit")
    )
    assert r.status_code == 202, r.text
    job = _wait(env, r.json()["id"], ("succeeded", "failed"))
    assert job["state"] == "succeeded", job["error"]
    assert job["steps_done"] == job["steps_planned"] == 5 and job["progress"] == 1.0
    assert job["epsilon"] > 0
    report = env.client.get(f"/v1/jobs/{job['id']}/report", headers=env.h("read"))
    assert report.status_code == 200 and report.json()["report"]["steps"] == 5
    after = env.client.get(f"/v1/datasets/{ds['id']}", headers=env.h("read")).json()
    assert after["spent_epsilon"] > 0 and after["active_jobs"] == 0
    assert after["spent_epsilon"] == pytest.approx(after["committed_epsilon"])
    ledger = env.client.get(f"/v1/datasets/{ds['id']}/ledger?limit=100", headers=env.h("read"))
    kinds = [e["kind"] for e in ledger.json()["items"]]
    assert kinds == ["register", "reserve"] + ["charge"] * 5 + ["release"]
    assert verify_ledger(env.ctx.db).ok
    # a per-example data set does not bound a user's ε: the per-user query is refused
    user = env.client.get(f"/v1/datasets/{ds['id']}/users/alice", headers=env.h("read"))
    assert user.status_code == 409 and "per example" in user.json()["detail"]
    audit = env.client.get("/v1/audit", headers=env.h("admin")).json()["items"]
    assert {"dataset.create", "job.submit"} <= {a["action"] for a in audit}


def test_refusal_at_submission_carries_the_numbers(env: Env) -> None:
    ds = _dataset(env, budget=0.5)
    r = env.client.post(
        "/v1/jobs",
        json={"dataset_id": ds["id"], "config": tiny_config(400)},
        headers=env.h("submit"),
    )
    assert r.status_code == 409
    body = r.json()
    assert body["budget_epsilon"] == 0.5 and body["requested_epsilon"] > 0.5
    assert "refused" in body["detail"]
    audit = env.client.get("/v1/audit", headers=env.h("admin")).json()["items"]
    assert any(a["action"] == "job.submit" and a["outcome"] == "refused" for a in audit)


def test_invalid_config_is_422_without_echoing_values(env: Env) -> None:
    ds = _dataset(env)
    bad = {"privacy": {"target_epsillon": "SECRET-VALUE"}}
    r = env.client.post(
        "/v1/jobs", json={"dataset_id": ds["id"], "config": bad}, headers=env.h("submit")
    )
    assert r.status_code == 422
    assert "target_epsillon" in r.text and "SECRET-VALUE" not in r.text
    r = env.client.post(
        "/v1/jobs", json={"dataset_id": "ds_missing", "config": {}}, headers=env.h("submit")
    )
    assert r.status_code == 404


def test_cancel_running_and_queued_jobs(running_env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env = running_env
    monkeypatch.setenv("PF_SIM_STEP_SECONDS", "0.05")
    ds = _dataset(env)
    slow = env.client.post(
        "/v1/jobs",
        json={"dataset_id": ds["id"], "config": tiny_config(400, sigma=4.0)},
        headers=env.h("submit"),
    ).json()
    queued = env.client.post(
        "/v1/jobs", json={"dataset_id": ds["id"], "config": tiny_config(5)}, headers=env.h("submit")
    ).json()
    _wait(env, slow["id"], ("running",))
    r = env.client.post(f"/v1/jobs/{queued['id']}/cancel", headers=env.h("submit"))
    assert r.status_code == 202 and r.json()["state"] == "cancelled"
    r = env.client.post(f"/v1/jobs/{slow['id']}/cancel", headers=env.h("submit"))
    assert r.status_code == 202
    done = _wait(env, slow["id"], ("cancelled", "failed", "succeeded"))
    assert done["state"] == "cancelled" and 0 < done["steps_done"] < 400
    assert (
        env.client.post(f"/v1/jobs/{slow['id']}/cancel", headers=env.h("submit")).status_code == 409
    )
    status = env.ctx.ledger.budget(ds["id"])
    assert status.committed_epsilon == pytest.approx(status.spent_epsilon)  # released
    assert verify_ledger(env.ctx.db).ok


def test_lost_worker_is_reaped_and_ledger_stays_correct(running_env: Env) -> None:
    """A job whose heartbeat stops (worker killed) is failed by the reaper, never stuck."""
    env = running_env
    ds = _dataset(env)
    plan = plan_job(validate_job_config(tiny_config(5)))
    job = env.ctx.ledger.submit_job(
        dataset_id=ds["id"],
        tenant="acme",
        config=tiny_config(5),
        planned=plan.segments,
        clip_norm=1.0,
        delta=1e-5,
    )

    with env.ctx.db.write_session() as session:  # a worker claimed it and charged 2 steps …
        session.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(state="running", attempts=1, heartbeat_at=utcnow())
        )
    for _ in range(2):
        env.ctx.ledger.charge(
            job.id, DpSegment(noise_multiplier=1.0, sample_rate=job.sample_rate, steps=1)
        )
    # … then died: no more heartbeats. The reaper (0.5 s interval, 2 s timeout) fails it.
    done = _wait(env, job.id, ("failed",), timeout=15)
    assert "worker lost" in done["error"] and done["steps_done"] == 2
    assert env.ctx.ledger.budget(ds["id"]).active_jobs == 0
    assert verify_ledger(env.ctx.db).ok


def test_pagination(env: Env) -> None:
    for _ in range(3):
        _dataset(env)
    page = env.client.get("/v1/datasets?limit=2&offset=0", headers=env.h("read")).json()
    assert page["count"] == 3 and len(page["items"]) == 2
    page2 = env.client.get("/v1/datasets?limit=2&offset=2", headers=env.h("read")).json()
    assert len(page2["items"]) == 1
    assert env.client.get("/v1/datasets?limit=0", headers=env.h("read")).status_code == 422


@pytest.mark.postgres
def test_job_lifecycle_on_postgres(make_env: Callable[..., Env], pg_settings: Any) -> None:
    env = make_env(
        runner=InProcessRunner(pg_settings),
        **pg_settings.model_dump(include={"database_url", "database_schema"}),
    )
    ds = _dataset(env)
    r = env.client.post(
        "/v1/jobs", json={"dataset_id": ds["id"], "config": tiny_config(3)}, headers=env.h("submit")
    )
    assert r.status_code == 202, r.text
    job = _wait(env, r.json()["id"], ("succeeded", "failed"))
    assert job["state"] == "succeeded" and job["steps_done"] == 3
    assert env.ctx.ledger.budget(ds["id"]).active_jobs == 0
    assert verify_ledger(env.ctx.db).ok
