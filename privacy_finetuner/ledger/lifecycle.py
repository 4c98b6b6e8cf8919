"""One job lifecycle: claim, heartbeat, re-queue, cancel (finish and charge are on the Ledger).

States (shared by ``Job.state``, the runner and the API): ``queued → running → succeeded |
failed | cancelled``; a running job whose worker went silent goes back to ``queued`` while
attempts remain. Every claim draws a fresh *attempt token*; heartbeat, charge and finish must
present it, so a worker that was paused past the heartbeat timeout (and whose job another worker
now runs) is refused on its next call and stops: one job never has two attempts charging it.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update

from privacy_finetuner.jobs import JobState
from privacy_finetuner.ledger.db import Database
from privacy_finetuner.ledger.models import Job, utcnow

__all__ = [
    "JOB_STATES",
    "Claim",
    "claim_job",
    "heartbeat",
    "request_cancel",
    "requeue_running",
    "requeue_stale",
    "stale_jobs",
]

JOB_STATES: tuple[str, ...] = tuple(state.value for state in JobState)  # the jobs.py vocabulary


@dataclass(frozen=True)
class Claim:
    """A claimed attempt: the job row as claimed and the token its calls must present."""

    job: Job
    token: str


def claim_job(db: Database, job_id: str, *, worker: str, run_dir: str) -> Claim | None:
    """``queued → running`` in one statement with a new attempt token; None if not claimable."""
    token = secrets.token_hex(16)
    with db.write_session() as session:
        now = utcnow()
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == "queued", Job.cancel_requested.is_(False))
            .values(
                state="running",
                attempts=Job.attempts + 1,
                worker=worker,
                heartbeat_at=now,
                started_at=now,
                run_dir=run_dir,
                attempt_token=token,
            )
        )
        claimed = getattr(result, "rowcount", 0) == 1
        job = session.get(Job, job_id)
    if job is None or not claimed:
        return None
    return Claim(job=job, token=token)


def heartbeat(db: Database, job_id: str, token: str) -> bool:
    """Stamp the attempt's heartbeat; False when the attempt no longer owns the job (stop)."""
    with db.write_session() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == "running", Job.attempt_token == token)
            .values(heartbeat_at=utcnow())
        )
        return getattr(result, "rowcount", 0) == 1


def stale_jobs(db: Database, timeout_s: float) -> list[tuple[str, int]]:
    """(job id, attempts) of running jobs without a heartbeat for ``timeout_s``."""
    cutoff = utcnow() - dt.timedelta(seconds=timeout_s)
    with db.read_session() as session:
        rows = session.execute(
            select(Job.id, Job.attempts).where(Job.state == "running", Job.heartbeat_at < cutoff)
        ).all()
    return [(str(r[0]), int(r[1])) for r in rows]


def requeue_stale(db: Database, job_id: str, timeout_s: float) -> bool:
    """``running → queued`` if still stale; revokes the attempt token (fences the old worker)."""
    cutoff = utcnow() - dt.timedelta(seconds=timeout_s)
    with db.write_session() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == "running", Job.heartbeat_at < cutoff)
            .values(state="queued", worker=None, attempt_token=None)
        )
        return getattr(result, "rowcount", 0) == 1


def requeue_running(db: Database, job_id: str, token: str) -> bool:
    """``running → queued`` by the attempt itself (graceful shutdown after a checkpoint)."""
    with db.write_session() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == "running", Job.attempt_token == token)
            .values(state="queued", worker=None, attempt_token=None)
        )
        return getattr(result, "rowcount", 0) == 1


def request_cancel(db: Database, job_id: str) -> None:
    """Flag a job for cancellation (a running attempt stops after its current step)."""
    with db.write_session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
