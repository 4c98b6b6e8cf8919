"""Running jobs: the executor shared by both runners, heartbeats, the reaper, and the runners.

* :class:`InProcessRunner` — a thread pool in the server process (REDIS_URL unset, embedded mode).
* :class:`RQRunner` — RQ on Redis; ``privacy-finetuner worker`` processes call :func:`rq_entry`.

A job claims itself (``queued → running``) in one transaction, then a heartbeat thread stamps
``heartbeat_at``. The reaper (in servers and workers) finds running jobs whose heartbeat is older
than ``heartbeat_timeout_s``: it re-queues them for resumption while attempts remain, else marks
them failed and releases their reservation. Steps are charged before they run, so a killed
worker leaves the ledger over- (never under-) charged by at most the step in flight.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select

from privacy_finetuner.accounting import DpSegment
from privacy_finetuner.errors import (
    BudgetExceededError,
    CheckpointError,
    ConfigError,
    LedgerError,
)
from privacy_finetuner.jobs import (
    JobFunction,
    ReservedPlan,
    RunResult,
    RunStatus,
    job_outcome,
    reserved_plan,
)
from privacy_finetuner.ledger import lifecycle
from privacy_finetuner.ledger.db import Database
from privacy_finetuner.ledger.models import Job, utcnow
from privacy_finetuner.ledger.store import Ledger, StaleAttemptError
from privacy_finetuner.service.settings import Settings

__all__ = [
    "InProcessRunner",
    "JobContext",
    "RQRunner",
    "Runner",
    "execute_job",
    "make_runner",
    "reap_stale_jobs",
    "rq_entry",
]

_log = logging.getLogger("privacy_finetuner.service.runner")


class Runner(Protocol):
    """Where accepted jobs go."""

    def submit(self, job_id: str) -> None: ...

    def start(self) -> None: ...

    def shutdown(self) -> None: ...


class JobContext:
    """Settings, database and ledger of one process (created lazily, re-created after fork)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url, schema=settings.database_schema, pool_size=4)
        self.ledger = Ledger(self.db)
        self.pid = os.getpid()


_CONTEXTS: dict[str, JobContext] = {}
_CONTEXT_LOCK = threading.Lock()


def context_for(settings: Settings) -> JobContext:
    """The process-wide context for these settings."""
    key = settings.model_dump_json()
    with _CONTEXT_LOCK:
        ctx = _CONTEXTS.get(key)
        if ctx is None or ctx.pid != os.getpid():
            ctx = JobContext(settings)
            _CONTEXTS[key] = ctx
        return ctx


def load_job_function(path: str) -> JobFunction:
    """Import ``module:function`` (a :class:`~privacy_finetuner.jobs.JobFunction`)."""
    module_name, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"job function {path!r} cannot be imported: {exc}") from exc


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class _Heartbeat(threading.Thread):
    """Stamps the attempt's heartbeat; ``fenced`` is set once the attempt no longer owns the job."""

    def __init__(self, ctx: JobContext, job_id: str, token: str) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.ctx = ctx
        self.job_id = job_id
        self.token = token
        self.halt = threading.Event()
        self.fenced = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.ctx.settings.heartbeat_interval_s):
            try:
                if not lifecycle.heartbeat(self.ctx.db, self.job_id, self.token):
                    self.fenced.set()
                    return
            except Exception:
                _log.warning("heartbeat failed", extra={"job_id": self.job_id}, exc_info=True)


def _claim(ctx: JobContext, job_id: str) -> lifecycle.Claim | None:
    claim = lifecycle.claim_job(
        ctx.db, job_id, worker=_worker_name(), run_dir=str(Path(ctx.settings.runs_dir) / job_id)
    )
    if claim is None:
        with ctx.db.read_session() as session:
            job = session.get(Job, job_id)
        if job is not None and job.state == "queued" and job.cancel_requested:
            ctx.ledger.finish_job(job_id, state="cancelled")
    return claim


def _reserved(ctx: JobContext, job: Job) -> ReservedPlan:
    segments = [DpSegment.from_dict(d) for d in job.planned]
    first = segments[0]
    from privacy_finetuner.ledger.models import Dataset

    with ctx.db.read_session() as session:
        ds = session.get(Dataset, job.dataset_id)
    units = None
    if ds is not None:
        from privacy_finetuner.service.routes.datasets import planning_units

        units = planning_units(ds)
    if units is None:
        cfg = job.config.get("data", {})
        if cfg.get("path") is None and float(cfg.get("validation_split", 0.1)) == 0.0:
            units = int(cfg.get("synthetic", {}).get("n", 2000))
    return ReservedPlan(
        noise_multiplier=first.noise_multiplier,
        sample_rate=first.sample_rate,
        steps=sum(s.steps for s in segments),
        num_units=units,
        noise_floor=ctx.settings.noise_multiplier_floor,
    )


def _check_data_path(ctx: JobContext, config: Any) -> None:
    """The data file must still resolve inside a configured root (no symlink swapped in)."""
    path = config.data.path
    if path is None:
        return
    resolved = Path(path).resolve()
    roots = [Path(ctx.settings.storage_root).resolve()]
    if ctx.settings.data_root is not None:
        roots.append(Path(ctx.settings.data_root).resolve())
    if not any(resolved.is_relative_to(r) for r in roots):
        raise ConfigError("the data set's file is not inside an allowed data root")


def _result_summary(result: RunResult) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in ("epsilon", "delta", "steps", "noise_multiplier", "sample_rate"):
        value = getattr(result, name, None)
        if isinstance(value, (int, float)):
            summary[name] = value
    return summary


def execute_job(ctx: JobContext, job_id: str, *, drain: threading.Event | None = None) -> str:
    """Run one queued job to a terminal state; returns the state ("skipped", "fenced",
    "requeued").

    ``drain`` set (graceful shutdown) makes the job stop at its next step, which the trainer
    does by saving a checkpoint; the attempt then puts the job back to ``queued`` so the next
    process resumes it from that checkpoint (its charged steps stay charged, none is lost).

    The attempt owns the job through its token: a heartbeat, charge or finish that the ledger
    refuses as stale (the job was re-queued and claimed again) stops this attempt at once, so
    a paused worker that wakes up never charges or finishes a job another worker now runs.
    """
    claim = _claim(ctx, job_id)
    if claim is None:
        return "skipped"
    job, token = claim.job, claim.token
    log_extra = {"job_id": job_id, "dataset_id": job.dataset_id}
    _log.info("job started", extra={**log_extra, "worker": _worker_name()})
    heartbeat = _Heartbeat(ctx, job_id, token)
    heartbeat.start()
    stop_state = {"checked": 0.0, "stop": False}
    floor = ctx.settings.noise_multiplier_floor

    def before_step(segment: DpSegment) -> None:
        if heartbeat.fenced.is_set():
            raise StaleAttemptError(f"job {job_id}: this attempt was fenced off")
        if floor is not None and segment.noise_multiplier < floor:
            raise ConfigError(
                f"noise multiplier {segment.noise_multiplier:g} is below the floor {floor:g}"
            )
        ctx.ledger.charge(job_id, segment, attempt=token)

    def should_stop() -> bool:
        if heartbeat.fenced.is_set() or (drain is not None and drain.is_set()):
            return True
        now = time.monotonic()
        if not stop_state["stop"] and now - stop_state["checked"] > 0.5:
            stop_state["checked"] = now
            with ctx.db.read_session() as session:
                row = session.execute(
                    select(Job.cancel_requested, Job.active, Job.attempt_token).where(
                        Job.id == job_id
                    )
                ).one()
            stop_state["stop"] = bool(row[0]) or not row[1] or row[2] != token
        return bool(stop_state["stop"])

    def on_event(event: dict[str, Any]) -> None:
        _log.debug("job event", extra=log_extra)

    def finish(**kwargs: Any) -> None:
        ctx.ledger.finish_job(job_id, attempt=token, **kwargs)

    state = "failed"
    try:
        from privacy_finetuner.service.jobspec import validate_job_config

        config = validate_job_config(job.config)
        _check_data_path(ctx, config)
        run_dir = Path(ctx.settings.runs_dir) / job_id
        run_dir.mkdir(parents=True, exist_ok=True)
        function = load_job_function(ctx.settings.job_function)
        kwargs: dict[str, Any] = {
            "run_dir": run_dir,
            "progress": False,
            "before_step": before_step,
            "should_stop": should_stop,
            "on_event": on_event,
        }
        with reserved_plan(_reserved(ctx, job)):
            if job.attempts > 1:
                try:  # resume from the checkpoint of the lost attempt
                    result = function(config, resume=True, **kwargs)
                except CheckpointError:
                    # died before its first checkpoint: start over in a clean run directory (a
                    # fresh run refuses a used one); the steps it charged stay charged
                    _log.warning("no checkpoint to resume; restarting", extra=log_extra)
                    shutil.rmtree(run_dir, ignore_errors=True)
                    run_dir.mkdir(parents=True, exist_ok=True)
                    result = function(config, resume=False, **kwargs)
            else:
                result = function(config, resume=False, **kwargs)
        if heartbeat.fenced.is_set():
            raise StaleAttemptError(f"job {job_id}: this attempt was fenced off")
        if drain is not None and drain.is_set() and result.status != RunStatus.COMPLETED:
            heartbeat.halt.set()
            if lifecycle.requeue_running(ctx.db, job_id, token):
                _log.info("job checkpointed and re-queued for shutdown", extra=log_extra)
                return "requeued"
        state, error = job_outcome(result.status, stop_requested=should_stop())
        report = result.report_path
        finish(
            state=state,
            error=error,
            result=_result_summary(result),
            report_path=str(report) if report else None,
        )
    except StaleAttemptError:
        _log.warning("attempt fenced off; another attempt owns the job", extra=log_extra)
        heartbeat.halt.set()
        return "fenced"
    except BudgetExceededError as exc:
        with contextlib.suppress(StaleAttemptError):
            finish(state="failed", error=f"privacy budget exhausted: {exc}")
    except LedgerError as exc:  # reaped or finished elsewhere while running
        _log.warning("job stopped by the ledger", extra=log_extra)
        with contextlib.suppress(LedgerError):
            finish(state="failed", error=str(exc))
    except Exception as exc:
        _log.exception("job failed", extra=log_extra)
        with contextlib.suppress(StaleAttemptError):
            finish(state="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
    finally:
        heartbeat.halt.set()
    with ctx.db.read_session() as session:
        row = session.get(Job, job_id)
        state = row.state if row is not None else state
    _log.info("job finished", extra={**log_extra, "state": state})
    return state


def reap_stale_jobs(ctx: JobContext, requeue: Callable[[str], None] | None = None) -> list[str]:
    """Fail (or re-queue, while attempts remain) running jobs whose heartbeat stopped.

    Re-queueing revokes the attempt token, so the silent worker is fenced off if it wakes.
    """
    timeout = ctx.settings.heartbeat_timeout_s
    reaped = []
    for job_id, attempts in lifecycle.stale_jobs(ctx.db, timeout):
        if requeue is not None and attempts < ctx.settings.max_job_attempts:
            if not lifecycle.requeue_stale(ctx.db, job_id, timeout):
                continue
            _log.warning("job lost its worker; re-queued to resume", extra={"job_id": job_id})
            requeue(job_id)
        else:
            _log.warning("job lost its worker; marked failed", extra={"job_id": job_id})
            ctx.ledger.finish_job(
                job_id, state="failed", error=f"worker lost: no heartbeat for {timeout:g}s"
            )
        reaped.append(job_id)
    return reaped


class _Reaper(threading.Thread):
    def __init__(
        self,
        ctx: JobContext,
        requeue: Callable[[str], None] | None,
        orphans: Callable[[], list[str]] | None = None,
    ) -> None:
        super().__init__(name="job-reaper", daemon=True)
        self.ctx = ctx
        self.requeue = requeue
        self.orphans = orphans
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.ctx.settings.reaper_interval_s):
            try:
                reap_stale_jobs(self.ctx, self.requeue)
                if self.orphans is not None:
                    self.orphans()
            except Exception:
                _log.warning("reaper pass failed", exc_info=True)


class InProcessRunner:
    """Thread-pool runner for the embedded mode (no Redis).

    On shutdown (SIGTERM to ``serve``) running jobs are asked to stop: each checkpoints at its
    next step and goes back to ``queued``; the next server process resumes it. Shutdown waits
    up to ``grace_s`` for that.
    """

    def __init__(self, settings: Settings, *, grace_s: float = 60.0) -> None:
        self.ctx = context_for(settings)
        self.pool = ThreadPoolExecutor(settings.inprocess_workers, thread_name_prefix="pf-job")
        self.reaper = _Reaper(self.ctx, self.submit)
        self.drain = threading.Event()
        self.grace_s = grace_s
        self._futures: set[Any] = set()

    def submit(self, job_id: str) -> None:
        future = self.pool.submit(self._run, job_id)
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)

    def _run(self, job_id: str) -> None:
        if self.drain.is_set():
            return  # shutting down: the job stays queued for the next process
        try:
            execute_job(self.ctx, job_id, drain=self.drain)
        except Exception:
            _log.exception("runner error", extra={"job_id": job_id})

    def start(self) -> None:
        """Start the reaper and pick up jobs left queued by a previous server process."""
        self.reaper.start()
        with self.ctx.db.read_session() as session:
            queued = session.scalars(select(Job.id).where(Job.state == "queued")).all()
        for job_id in queued:
            self.submit(job_id)

    def shutdown(self) -> None:
        """Checkpoint and re-queue running jobs (within ``grace_s``), then stop."""
        from concurrent.futures import wait

        self.drain.set()
        self.reaper.halt.set()
        wait(list(self._futures), timeout=self.grace_s)
        self.pool.shutdown(wait=False, cancel_futures=True)


def rq_entry(job_id: str) -> str:
    """What an RQ worker runs: settings come from the worker's environment."""
    return execute_job(context_for(Settings()), job_id)


class RQRunner:
    """Enqueue jobs on Redis with RQ; ``privacy-finetuner worker`` processes run them."""

    def __init__(self, settings: Settings, *, reaper: bool = True) -> None:
        import redis
        from rq import Queue

        if settings.redis_url is None:
            raise ConfigError("RQRunner needs REDIS_URL")
        self.settings = settings
        self.ctx = context_for(settings)
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.queue = Queue(settings.queue_name, connection=self.redis)
        self.reaper = _Reaper(self.ctx, self.submit, self.recover_orphans) if reaper else None

    def recover_orphans(self, *, older_than_s: float = 60.0) -> list[str]:
        """Re-enqueue queued jobs whose RQ entry is gone (Redis flushed or lost)."""
        from rq.job import Job as RQJob

        cutoff = utcnow() - dt.timedelta(seconds=older_than_s)
        with self.ctx.db.read_session() as session:
            queued = session.execute(
                select(Job.id, Job.attempts).where(Job.state == "queued", Job.created_at < cutoff)
            ).all()
        recovered = []
        for job_id, attempts in queued:
            if not RQJob.exists(f"{job_id}-{attempts}", connection=self.redis):
                _log.warning("queued job missing from Redis; re-enqueued", extra={"job_id": job_id})
                self.submit(job_id)
                recovered.append(job_id)
        return recovered

    def submit(self, job_id: str) -> None:
        with self.ctx.db.read_session() as session:
            attempts = session.scalar(select(Job.attempts).where(Job.id == job_id)) or 0
        self.queue.enqueue_call(
            "privacy_finetuner.service.runner.rq_entry",
            args=(job_id,),
            job_id=f"{job_id}-{attempts}",
            timeout=self.settings.job_timeout_s,
            result_ttl=86_400,
            failure_ttl=7 * 86_400,
            description=f"privacy-finetuner job {job_id}",
        )

    def start(self) -> None:
        if self.reaper is not None:
            self.reaper.start()

    def shutdown(self) -> None:
        if self.reaper is not None:
            self.reaper.halt.set()
        self.redis.close()


def make_runner(settings: Settings) -> Runner:
    """RQ when REDIS_URL is set, else the in-process runner."""
    if settings.redis_url:
        return RQRunner(settings)
    return InProcessRunner(settings)
