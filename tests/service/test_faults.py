"""Fault tests on real PostgreSQL (+ Redis): fenced attempts, retries, enqueue failures, plans.

Each test prints the counts it asserts (charges, steps, runs) so CI logs carry them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from svc_helpers import Env, tiny_config

from privacy_finetuner.ledger import lifecycle, verify_ledger
from privacy_finetuner.ledger.models import Job, LedgerEntry
from privacy_finetuner.service.runner import InProcessRunner, RQRunner, context_for, execute_job
from privacy_finetuner.service.settings import Settings
from privacy_finetuner.service.testing import require_service, unique_name

pytestmark = pytest.mark.postgres


def _dataset(env: Env, budget: float = 50.0) -> str:
    body = {"name": f"d{time.monotonic_ns()}", "budget_epsilon": budget, "budget_delta": 1e-5}
    r = env.client.post("/v1/datasets", json=body, headers=env.h("admin"))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _charges(env: Env, job_id: str) -> int:
    with env.ctx.db.read_session() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(LedgerEntry)
                .where(LedgerEntry.job_id == job_id, LedgerEntry.kind == "charge")
            )
            or 0
        )


def _wait(env: Env, job_id: str, states: tuple[str, ...], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = env.client.get(f"/v1/jobs/{job_id}", headers=env.h("read")).json()
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} stuck in {job.get('state')}")


def test_paused_worker_is_fenced_and_charges_equal_steps(
    make_env: Callable[..., Env], pg_settings: Settings
) -> None:
    """A worker frozen past the heartbeat timeout is re-queued; when it wakes, its next charge
    is refused and it stops: total charges = steps run, one attempt finishes the job."""
    settings = pg_settings.model_copy(
        update={
            "job_function": "svc_helpers:pausing_run_job",
            "max_job_attempts": 2,
            "heartbeat_interval_s": 0.2,
            "heartbeat_timeout_s": 1.0,
            "reaper_interval_s": 0.2,
            "inprocess_workers": 2,
        }
    )
    env = make_env(runner=InProcessRunner(settings), **settings.model_dump())
    ds = _dataset(env)
    r = env.client.post(
        "/v1/jobs", json={"dataset_id": ds, "config": tiny_config(30)}, headers=env.h("submit")
    )
    assert r.status_code == 202, r.text
    job = _wait(env, r.json()["id"], ("succeeded", "failed"))
    time.sleep(3.5)  # the frozen attempt wakes up (3 s) and tries to charge step 4
    job = env.client.get(f"/v1/jobs/{job['id']}", headers=env.h("read")).json()
    charges = _charges(env, job["id"])
    print(
        f"fenced worker: attempts={job['attempts']} steps_done={job['steps_done']} "
        f"charges={charges} planned={job['steps_planned']}"
    )
    assert job["state"] == "succeeded", job["error"]
    assert job["attempts"] == 2
    assert charges == job["steps_done"] == job["steps_planned"] == 30
    assert verify_ledger(env.ctx.db).ok


def test_retry_without_checkpoint_starts_over_and_succeeds(
    make_env: Callable[..., Env], pg_settings: Settings
) -> None:
    """An attempt that died before its first checkpoint: the retry's resume raises
    CheckpointError, and the fresh start must not be refused by the used run directory."""
    settings = pg_settings.model_copy(
        update={"job_function": "svc_helpers:fresh_dir_run_job", "max_job_attempts": 2}
    )
    env = make_env(**settings.model_dump())
    ds = _dataset(env)
    job_id = env.client.post(
        "/v1/jobs", json={"dataset_id": ds, "config": tiny_config(4)}, headers=env.h("submit")
    ).json()["id"]
    run_dir = Path(settings.runs_dir) / job_id
    claim = lifecycle.claim_job(env.ctx.db, job_id, worker="dead", run_dir=str(run_dir))
    assert claim is not None
    run_dir.mkdir(parents=True)
    (run_dir / "status.json").write_text("{}")  # it started, then died without a checkpoint
    env.ctx.ledger.charge(job_id, _first_step(env, job_id), attempt=claim.token)
    assert lifecycle.requeue_stale(env.ctx.db, job_id, timeout_s=-1.0)
    state = execute_job(context_for(settings), job_id)
    job = env.client.get(f"/v1/jobs/{job_id}", headers=env.h("read")).json()
    charges = _charges(env, job_id)
    print(f"checkpoint retry: state={state} attempts={job['attempts']} charges={charges}")
    assert state == "succeeded", job["error"]
    assert charges == 1 + 4  # the dead attempt's charged step stays charged (safe side)


def _first_step(env: Env, job_id: str) -> Any:
    from privacy_finetuner.accounting import DpSegment

    with env.ctx.db.read_session() as session:
        job = session.get(Job, job_id)
    assert job is not None
    return DpSegment(noise_multiplier=job.noise_multiplier, sample_rate=job.sample_rate, steps=1)


def test_idempotency_key_reserves_once(make_env: Callable[..., Env], pg_settings: Settings) -> None:
    env = make_env(**pg_settings.model_dump())
    ds = _dataset(env)
    body = {"dataset_id": ds, "config": tiny_config(5)}
    headers = {**env.h("submit"), "Idempotency-Key": "retry-7"}
    first = env.client.post("/v1/jobs", json=body, headers=headers)
    second = env.client.post("/v1/jobs", json=body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    other = env.client.post(
        "/v1/jobs", json={"dataset_id": ds, "config": tiny_config(6)}, headers=headers
    )
    assert other.status_code == 422 and "Idempotency-Key" in other.text
    with env.ctx.db.read_session() as session:
        reserves = session.scalar(
            select(func.count())
            .select_from(LedgerEntry)
            .where(LedgerEntry.dataset_id == ds, LedgerEntry.kind == "reserve")
        )
    print(f"idempotency: reservations={reserves}")
    assert reserves == 1


@pytest.fixture
def rq_pg(pg_settings: Settings) -> Iterator[Settings]:
    url = require_service("TEST_REDIS_URL")
    queue = unique_name("pf_q")
    yield pg_settings.model_copy(update={"redis_url": url, "queue_name": queue})
    import redis

    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match=f"*{queue}*"):
        client.delete(key)
    client.close()


def test_redis_down_at_submission_is_202_and_the_job_runs_once(
    make_env: Callable[..., Env], rq_pg: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enqueue fails after the reservation: 202 (never 500, which makes clients retry and
    spend ε twice); the reaper's orphan pass enqueues it later and it runs exactly once."""
    import redis
    from rq import Queue, SimpleWorker

    down = rq_pg.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    env = make_env(runner=RQRunner(down, reaper=False), **down.model_dump())
    ds = _dataset(env)
    r = env.client.post(
        "/v1/jobs", json={"dataset_id": ds, "config": tiny_config(6)}, headers=env.h("submit")
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert r.json()["state"] == "queued"
    # Redis is back: the reaper's orphan pass finds the queued job and enqueues it
    up = RQRunner(rq_pg, reaper=False)
    assert up.recover_orphans(older_than_s=0) == [job_id]
    for name, value in {
        "DATABASE_URL": rq_pg.database_url,
        "PF_DATABASE_SCHEMA": str(rq_pg.database_schema),
        "PF_RUNS_DIR": str(rq_pg.runs_dir),
        "PF_JOB_FUNCTION": rq_pg.job_function,
        "REDIS_URL": str(rq_pg.redis_url),
    }.items():
        monkeypatch.setenv(name, value)
    connection = redis.Redis.from_url(str(rq_pg.redis_url))
    SimpleWorker([Queue(rq_pg.queue_name, connection=connection)], connection=connection).work(
        burst=True
    )
    assert up.recover_orphans(older_than_s=0) == []  # not queued any more
    job = env.client.get(f"/v1/jobs/{job_id}", headers=env.h("read")).json()
    charges = _charges(env, job_id)
    print(f"redis down: state={job['state']} attempts={job['attempts']} charges={charges}")
    assert job["state"] == "succeeded" and job["attempts"] == 1
    assert charges == job["steps_done"] == 6
    up.shutdown()


def test_trainer_refuses_a_plan_other_than_the_reserved_one(
    make_env: Callable[..., Env], pg_settings: Settings
) -> None:
    """Finding 8: a trainer whose unit count differs from the one the ledger planned from
    stops before step 0, naming both; nothing is charged."""
    settings = pg_settings.model_copy(update={"job_function": "svc_helpers:miscounting_run_job"})
    env = make_env(**settings.model_dump())
    ds = _dataset(env)
    job_id = env.client.post(
        "/v1/jobs", json={"dataset_id": ds, "config": tiny_config(5)}, headers=env.h("submit")
    ).json()["id"]
    assert execute_job(context_for(settings), job_id) == "failed"
    job = env.client.get(f"/v1/jobs/{job_id}", headers=env.h("read")).json()
    assert "differs from what the ledger reserved" in job["error"]
    assert "units 1001 (reserved 1000)" in job["error"]
    assert _charges(env, job_id) == 0


def test_noise_floor_is_checked_on_what_runs(
    make_env: Callable[..., Env], pg_settings: Settings
) -> None:
    """Finding 9: the floor applies to every step a job takes, not only to its submission."""
    settings = pg_settings.model_copy(
        update={"job_function": "svc_helpers:low_noise_run_job", "noise_multiplier_floor": 0.5}
    )
    env = make_env(**settings.model_dump())
    ds = _dataset(env)
    r = env.client.post(
        "/v1/jobs", json={"dataset_id": ds, "config": tiny_config(5)}, headers=env.h("submit")
    )
    assert r.status_code == 202, r.text
    assert execute_job(context_for(settings), r.json()["id"]) == "failed"
    job = env.client.get(f"/v1/jobs/{r.json()['id']}", headers=env.h("read")).json()
    assert "below the floor" in job["error"] and _charges(env, job["id"]) == 0


def _serve(env: dict[str, str], port: int, log: Path) -> Any:
    import subprocess
    import sys

    import httpx

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "privacy_finetuner",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(log.read_text())


def test_sigterm_mid_job_checkpoints_requeues_and_resumes(
    pg_settings: Settings, tmp_path: Path
) -> None:
    """SIGTERM to ``serve`` at step ≥ 11 of 60: the job is checkpointed and re-queued (not
    failed as "worker lost"); the next server resumes it; charges = steps = 60."""
    import os
    import signal
    import socket

    import httpx

    from privacy_finetuner.ledger import Database
    from privacy_finetuner.service.security import KeyStore

    db = Database(pg_settings.database_url, schema=pg_settings.database_schema)
    from privacy_finetuner.service.migrate import upgrade_database

    upgrade_database(db)
    key = KeyStore(db).create(tenant="acme", scopes="admin")[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {
        **os.environ,
        "DATABASE_URL": pg_settings.database_url,
        "PF_DATABASE_SCHEMA": str(pg_settings.database_schema),
        "PF_RUNS_DIR": str(tmp_path / "runs"),
        "PF_JOB_FUNCTION": "privacy_finetuner.service.simulate:simulated_run_job",
        "PF_SIM_STEP_SECONDS": "0.1",
        "PF_MAX_JOB_ATTEMPTS": "3",
        "PF_LOG_LEVEL": "WARNING",
    }
    env.pop("REDIS_URL", None)
    log = tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    h = {"X-API-Key": key}
    server = _serve(env, port, log)
    try:
        body = {"name": "sigterm", "budget_epsilon": 50.0, "budget_delta": 1e-5}
        ds = httpx.post(f"{url}/v1/datasets", json=body, headers=h, timeout=30).json()
        r = httpx.post(
            f"{url}/v1/jobs",
            json={"dataset_id": ds["id"], "config": tiny_config(60)},
            headers=h,
            timeout=30,
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/v1/jobs/{job_id}", headers=h, timeout=30).json()["steps_done"] < 11:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    with db.read_session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        charged_at_stop = sum(job.charged.values())
        print(f"sigterm: state={job.state} steps_done={job.steps_done} charges={charged_at_stop}")
        assert job.state == "queued" and job.error is None
        assert 11 <= job.steps_done == charged_at_stop < 60
    server = _serve(env, port, log)
    try:
        deadline = time.monotonic() + 90
        while True:
            done = httpx.get(f"{url}/v1/jobs/{job_id}", headers=h, timeout=30).json()
            if done["state"] not in ("queued", "running"):
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    with db.read_session() as session:
        charges = session.scalar(
            select(func.count())
            .select_from(LedgerEntry)
            .where(LedgerEntry.job_id == job_id, LedgerEntry.kind == "charge")
        )
    print(
        f"sigterm resumed: state={done['state']} attempts={done['attempts']} "
        f"steps_done={done['steps_done']} charges={charges}"
    )
    assert done["state"] == "succeeded", done["error"]
    assert done["attempts"] == 2 and charges == done["steps_done"] == 60
    assert verify_ledger(db).ok
    db.dispose()
