"""Jobs on a real Redis queue run by ``privacy-finetuner worker`` processes; a killed worker."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from svc_helpers import SIMULATED, Env, tiny_config

from privacy_finetuner.ledger import verify_ledger
from privacy_finetuner.service.runner import RQRunner
from privacy_finetuner.service.settings import Settings
from privacy_finetuner.service.testing import require_service, unique_name

pytestmark = pytest.mark.redis


@pytest.fixture
def rq_settings(settings: Settings) -> Iterator[Settings]:
    url = require_service("TEST_REDIS_URL")
    queue = unique_name("pf_q")
    yield settings.model_copy(update={"redis_url": url, "queue_name": queue, "max_job_attempts": 2})
    import redis

    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match=f"*{queue}*"):
        client.delete(key)
    client.close()


def _start_worker(s: Settings, tmp: Path, step_seconds: float) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": s.database_url,
        "REDIS_URL": str(s.redis_url),
        "PF_QUEUE_NAME": s.queue_name,
        "PF_JOB_FUNCTION": SIMULATED,
        "PF_RUNS_DIR": str(s.runs_dir),
        "PF_SIM_STEP_SECONDS": str(step_seconds),
        "PF_HEARTBEAT_INTERVAL": "0.2",
        "PF_HEARTBEAT_TIMEOUT": "2",
        "PF_REAPER_INTERVAL": "0.5",
        "PF_MAX_JOB_ATTEMPTS": "2",
        "PF_LOG_LEVEL": "WARNING",
    }
    log = (tmp / f"worker-{time.monotonic_ns()}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "privacy_finetuner", "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Signal the worker and its RQ work horse (which runs in its own process group)."""
    if proc.poll() is not None:
        return
    horses = psutil.Process(proc.pid).children(recursive=True)
    if sig == signal.SIGKILL:
        for horse in horses:
            horse.send_signal(sig)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=20)
    psutil.wait_procs(horses, timeout=10)


def _wait(
    env: Env, job_id: str, cond: Callable[[dict[str, Any]], bool], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = env.client.get(f"/v1/jobs/{job_id}", headers=env.h("read")).json()
        if cond(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"timed out; job is {job}")


def test_rq_worker_runs_jobs_and_survives_a_killed_worker(
    make_env: Callable[..., Env], rq_settings: Settings, tmp_path: Path
) -> None:
    env = make_env(
        runner=RQRunner(rq_settings),
        **rq_settings.model_dump(include={"redis_url", "queue_name", "max_job_attempts"}),
    )
    assert env.client.get("/readyz").json()["checks"]["redis"] == "ok"
    ds = env.client.post(
        "/v1/datasets",
        headers=env.h("admin"),
        json={"name": "rq", "budget_epsilon": 8, "budget_delta": 1e-5},
    ).json()
    worker = _start_worker(rq_settings, tmp_path, step_seconds=0.05)
    try:
        quick = env.client.post(
            "/v1/jobs",
            headers=env.h("submit"),
            json={"dataset_id": ds["id"], "config": tiny_config(4)},
        ).json()
        done = _wait(env, quick["id"], lambda j: j["state"] in ("succeeded", "failed"))
        assert done["state"] == "succeeded", done["error"]

        slow = env.client.post(
            "/v1/jobs",
            headers=env.h("submit"),
            json={"dataset_id": ds["id"], "config": tiny_config(60, sigma=4.0)},
        ).json()
        _wait(env, slow["id"], lambda j: j["steps_done"] >= 5)
        _stop(worker, signal.SIGKILL)  # the worker and its work horse die mid-job
        killed_at = _wait(env, slow["id"], lambda j: True)["steps_done"]
        executed = json.loads((rq_settings.runs_dir / slow["id"] / "checkpoint.json").read_text())
        assert killed_at >= executed["steps"]  # charged before run: never under-charged

        # the app's reaper re-queues it (attempt 2 of 2); a new worker resumes it
        worker = _start_worker(rq_settings, tmp_path, step_seconds=0.0)
        final = _wait(env, slow["id"], lambda j: j["state"] in ("succeeded", "failed"))
        assert final["state"] == "succeeded", final["error"]
        assert final["attempts"] == 2
        assert final["steps_done"] >= 60
    finally:
        _stop(worker)
    status = env.ctx.ledger.budget(ds["id"])
    assert status.active_jobs == 0 and status.committed_epsilon <= 8
    assert verify_ledger(env.ctx.db).ok


def test_queued_job_lost_by_redis_is_re_enqueued(
    make_env: Callable[..., Env], rq_settings: Settings
) -> None:
    import redis
    from rq import Queue
    from sqlalchemy import update

    from privacy_finetuner.ledger.models import Job, utcnow

    runner = RQRunner(rq_settings, reaper=False)
    env = make_env(runner=runner, **rq_settings.model_dump(include={"redis_url", "queue_name"}))
    ds = env.client.post(
        "/v1/datasets",
        headers=env.h("admin"),
        json={"name": "lost", "budget_epsilon": 8, "budget_delta": 1e-5},
    ).json()
    job = env.client.post(
        "/v1/jobs", headers=env.h("submit"), json={"dataset_id": ds["id"], "config": tiny_config(2)}
    ).json()
    queue = Queue(
        rq_settings.queue_name, connection=redis.Redis.from_url(str(rq_settings.redis_url))
    )
    assert queue.count == 1
    queue.empty()  # Redis lost the queue entry
    assert runner.recover_orphans() == []  # too young to be called lost
    with env.ctx.db.write_session() as session:
        session.execute(
            update(Job)
            .where(Job.id == job["id"])
            .values(created_at=utcnow() - dt.timedelta(minutes=5))
        )
    assert runner.recover_orphans() == [job["id"]]
    assert queue.count == 1
