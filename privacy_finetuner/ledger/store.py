"""The privacy-budget ledger: data sets, reservations at submission, charges before each step.

Invariant (checked under the data set's lock, the row lock ``SELECT … FOR UPDATE`` on PostgreSQL
and ``BEGIN IMMEDIATE`` on SQLite)::

    ε_PLD(charged steps of all jobs + unspent reservations of active jobs) ≤ ε budget

A submission reserves its planned steps or is refused with the numbers; a running job charges
each step *before* it runs (a crash can over-charge a step, never under-charge); when a job ends
its unspent reservation is released. Every change appends a hash-chained :class:`LedgerEntry`.
"""

from __future__ import annotations

import datetime as dt
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from privacy_finetuner.accounting import DpSegment, check_delta, check_epsilon
from privacy_finetuner.errors import BudgetExceededError, ConfigError, LedgerError, NotFoundError
from privacy_finetuner.ledger.budget import (
    add_counts,
    counts_from_segments,
    epsilon_of,
    segment_key,
    subtract_counts,
)
from privacy_finetuner.ledger.chain import GENESIS_HASH, entry_hash
from privacy_finetuner.ledger.db import Database
from privacy_finetuner.ledger.models import Dataset, Job, LedgerEntry, utcnow

__all__ = [
    "PRIVACY_UNITS",
    "TERMINAL_STATES",
    "Admission",
    "AdmissionChanged",
    "BudgetStatus",
    "Ledger",
    "StaleAttemptError",
]

PRIVACY_UNITS = ("example", "user")
TERMINAL_STATES = ("succeeded", "failed", "cancelled")


class StaleAttemptError(LedgerError):
    """A worker presented an attempt token that is no longer the job's: it was fenced off (its
    job was re-queued and claimed by another attempt) and must stop without touching the job."""


class AdmissionChanged(LedgerError):
    """The data set's commitments changed between the ε computed outside the lock and the write
    transaction; the caller recomputes (see :meth:`Ledger.admission`)."""


@dataclass(frozen=True)
class Admission:
    """ε of a submission computed *outside* the write lock from a snapshot of the commitments.

    ``committed`` is the snapshot the ε was computed on; :meth:`Ledger.submit_job` re-reads it
    under the lock and uses ``projected_epsilon`` only if it is unchanged.
    """

    committed: dict[str, int]
    planned: dict[str, int]
    projected_epsilon: float
    committed_epsilon: float


@dataclass(frozen=True)
class BudgetStatus:
    """A data set's budget: ε spent (charged steps), committed (spent + reservations), left."""

    dataset_id: str
    budget_epsilon: float
    delta: float
    spent_epsilon: float
    committed_epsilon: float
    remaining_epsilon: float
    active_jobs: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


class Ledger:
    """Budget ledger over a :class:`~privacy_finetuner.ledger.db.Database`.

    Args:
        db: where the ledger lives.
        clock: returns the current UTC time (injectable for tests).
    """

    def __init__(self, db: Database, *, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.db = db
        self._clock = clock

    # -- data sets -------------------------------------------------------------------------------

    def register_dataset(
        self,
        *,
        tenant: str,
        name: str,
        budget_epsilon: float,
        budget_delta: float,
        privacy_unit: str = "example",
        num_units: int | None = None,
        data_path: str | None = None,
        description: str = "",
        actor: str | None = None,
    ) -> Dataset:
        """Register a data set with its lifetime (ε, δ) budget; the first entry of its chain.

        Raises:
            ConfigError: invalid budget, privacy unit or a duplicate name in the tenant.
        """
        check_epsilon(budget_epsilon)
        check_delta(budget_delta)
        if privacy_unit not in PRIVACY_UNITS:
            raise ConfigError(f"privacy_unit must be one of {PRIVACY_UNITS}, got {privacy_unit!r}")
        if num_units is not None and num_units < 1:
            raise ConfigError(f"num_units must be >= 1, got {num_units}")
        with self.db.write_session() as session:
            exists = session.scalar(
                select(Dataset.id).where(Dataset.tenant == tenant, Dataset.name == name)
            )
            if exists is not None:
                raise ConfigError(f"data set {name!r} already exists")
            ds = Dataset(
                id="ds_" + secrets.token_hex(8),
                tenant=tenant,
                name=name,
                budget_epsilon=float(budget_epsilon),
                budget_delta=float(budget_delta),
                privacy_unit=privacy_unit,
                num_units=num_units,
                data_path=data_path,
                description=description,
                created_at=self._clock(),
                charged={},
                entry_count=0,
                head_hash=GENESIS_HASH,
            )
            session.add(ds)
            session.flush()
            self._append(session, ds, "register", registration_payload(ds, actor=actor))
        return ds

    def get_dataset(self, dataset_id: str, *, tenant: str | None = None) -> Dataset:
        """The data set, or NotFoundError (also when it belongs to another tenant)."""
        with self.db.read_session() as session:
            ds = session.get(Dataset, dataset_id)
            if ds is None or (tenant is not None and ds.tenant != tenant):
                raise NotFoundError(f"data set {dataset_id!r} not found")
            return ds

    def list_datasets(
        self, *, tenant: str | None, limit: int = 50, offset: int = 0
    ) -> tuple[list[Dataset], int]:
        """One page of data sets (oldest first) and the total count."""
        with self.db.read_session() as session:
            stmt = select(Dataset)
            count = select(func.count()).select_from(Dataset)
            if tenant is not None:
                stmt = stmt.where(Dataset.tenant == tenant)
                count = count.where(Dataset.tenant == tenant)
            rows = session.scalars(
                stmt.order_by(Dataset.created_at, Dataset.id).limit(limit).offset(offset)
            ).all()
            return list(rows), int(session.scalar(count) or 0)

    def budget(self, dataset_id: str, *, tenant: str | None = None) -> BudgetStatus:
        """Spent, committed and remaining ε of a data set (precise PLD grid)."""
        with self.db.read_session() as session:
            ds = session.get(Dataset, dataset_id)
            if ds is None or (tenant is not None and ds.tenant != tenant):
                raise NotFoundError(f"data set {dataset_id!r} not found")
            jobs = self._active_jobs(session, dataset_id)
            reserved = add_counts(*(subtract_counts(_planned(j), j.charged) for j in jobs))
            spent = epsilon_of(ds.charged, delta=ds.budget_delta)
            committed = epsilon_of(add_counts(ds.charged, reserved), delta=ds.budget_delta)
            return BudgetStatus(
                dataset_id=ds.id,
                budget_epsilon=ds.budget_epsilon,
                delta=ds.budget_delta,
                spent_epsilon=spent,
                committed_epsilon=committed,
                remaining_epsilon=max(0.0, ds.budget_epsilon - committed),
                active_jobs=len(jobs),
            )

    def spent_epsilon(self, dataset_id: str, *, user: str | None = None) -> float:
        """ε spent on the data set; with ``user``, ε spent on that user.

        Every job trains on every user of its data set (a client's claim of which users a job
        used is not evidence), so a user's ε is the data set's ε; it is only defined when the
        data set accounts per user. On a per-example data set a user with k traces has up to
        about kε (group privacy), which the example-level ledger does not bound.

        Raises:
            ConfigError: ``user`` given on a per-example data set.
        """
        with self.db.read_session() as session:
            ds = session.get(Dataset, dataset_id)
            if ds is None:
                raise NotFoundError(f"data set {dataset_id!r} not found")
            if user is not None and ds.privacy_unit != "user":
                raise ConfigError(
                    "this data set accounts per example: a user's epsilon is not bounded by "
                    "its ledger (a user with k traces has up to about k times the example-level "
                    "epsilon); register the data set with privacy_unit 'user' for per-user budgets"
                )
            return epsilon_of(ds.charged, delta=ds.budget_delta)

    # -- jobs ------------------------------------------------------------------------------------

    def committed_counts(self, dataset_id: str, *, tenant: str | None = None) -> dict[str, int]:
        """Charged steps plus unspent reservations of a data set (a read, no lock, no ε)."""
        with self.db.read_session() as session:
            ds = session.get(Dataset, dataset_id)
            if ds is None or (tenant is not None and ds.tenant != tenant):
                raise NotFoundError(f"data set {dataset_id!r} not found")
            return self._committed(session, ds)

    def admission(
        self,
        dataset_id: str,
        planned: Sequence[DpSegment],
        *,
        tenant: str | None = None,
        epsilon: Callable[[dict[str, int], float], float] | None = None,
    ) -> Admission:
        """ε of the data set with ``planned`` added, computed without holding any lock.

        The PLD composition can take seconds for many distinct (σ, q); doing it here (with
        ``epsilon``, e.g. a worker with a time limit, see the service) keeps the data set's
        write lock short. ``epsilon(counts, delta)`` defaults to the admission grid in-process.
        """
        ds = self.get_dataset(dataset_id, tenant=tenant)
        committed = self.committed_counts(dataset_id, tenant=tenant)
        planned_counts = counts_from_segments(planned)

        def default(counts: dict[str, int], delta: float) -> float:
            return epsilon_of(counts, delta=delta, precise=False)

        compute = epsilon or default
        projected = compute(add_counts(committed, planned_counts), ds.budget_delta)
        already = compute(committed, ds.budget_delta)
        return Admission(
            committed=committed,
            planned=planned_counts,
            projected_epsilon=projected,
            committed_epsilon=already,
        )

    def submit_job(
        self,
        *,
        dataset_id: str,
        tenant: str,
        planned: Sequence[DpSegment],
        config: dict[str, Any],
        clip_norm: float,
        delta: float,
        privacy_unit: str = "example",
        created_by: str | None = None,
        job_id: str | None = None,
        admission: Admission | None = None,
        idempotency_key: str | None = None,
        request_sha256: str | None = None,
    ) -> Job:
        """Reserve the planned steps of a new job, or refuse it with the numbers.

        With ``admission`` (from :meth:`admission`, computed outside the lock) its ε is used if
        the commitments are unchanged under the lock, else :class:`AdmissionChanged` is raised
        so the caller recomputes outside the lock. Without it, ε is computed under the lock.
        With ``idempotency_key``, a second submission with the same key returns the first job.

        Raises:
            BudgetExceededError: the data set's ε (PLD, pessimistic grid) would pass its budget;
                the refusal is recorded in the ledger before raising.
            NotFoundError: unknown data set (or another tenant's).
            ConfigError: the job's privacy unit is not the data set's (a per-user job on a
                per-example data set would need the replace-one bound at the user sampling
                rate, which this ledger does not compute), or the idempotency key was used
                for a different request.
            AdmissionChanged: see above.
        """
        if not planned:
            raise ConfigError("a job must plan at least one DP step")
        planned_counts = counts_from_segments(planned)
        refusal: BudgetExceededError | None = None
        with self.db.write_session() as session:
            ds = self._lock(session, dataset_id, tenant)
            if idempotency_key is not None:
                prior = session.scalars(
                    select(Job).where(
                        Job.tenant == ds.tenant, Job.idempotency_key == idempotency_key
                    )
                ).one_or_none()
                if prior is not None:
                    if prior.request_sha256 != request_sha256:
                        raise ConfigError("Idempotency-Key was already used for another request")
                    return prior
            if privacy_unit != ds.privacy_unit:
                raise ConfigError(
                    f"data set {ds.name!r} accounts per {ds.privacy_unit}; "
                    f"a per-{privacy_unit} job cannot be charged to it"
                )
            committed = self._committed(session, ds)
            if admission is not None:
                if admission.committed != committed or admission.planned != planned_counts:
                    raise AdmissionChanged("the data set's commitments changed; recompute")
                projected = admission.projected_epsilon
            else:
                projected = epsilon_of(
                    add_counts(committed, planned_counts), delta=ds.budget_delta, precise=False
                )
            job_id = job_id or "job_" + secrets.token_hex(8)
            if projected > ds.budget_epsilon or not math.isfinite(projected):
                if admission is not None:
                    already = admission.committed_epsilon
                else:
                    already = epsilon_of(committed, delta=ds.budget_delta, precise=False)
                payload = {
                    "planned": [s.to_dict() for s in planned],
                    "requested_epsilon": projected,
                    "committed_epsilon": already,
                    "budget_epsilon": ds.budget_epsilon,
                    "actor": created_by,
                }
                self._append(session, ds, "refuse", payload, job_id=job_id)
                refusal = BudgetExceededError(
                    f"job refused: data set {ds.name!r} would reach epsilon={projected:.4f} "
                    f"(committed {already:.4f} + this job) > budget {ds.budget_epsilon:g} "
                    f"at delta={ds.budget_delta:g}",
                    requested_epsilon=projected,
                    budget_epsilon=ds.budget_epsilon,
                )
            else:
                first = planned[0]
                job = Job(
                    id=job_id,
                    dataset_id=ds.id,
                    tenant=ds.tenant,
                    state="queued",
                    config=config,
                    planned=[s.to_dict() for s in planned],
                    charged={},
                    users=None,
                    planned_epsilon=projected,
                    delta=float(delta),
                    steps_planned=sum(s.steps for s in planned),
                    steps_done=0,
                    noise_multiplier=first.noise_multiplier,
                    sample_rate=first.sample_rate,
                    clip_norm=float(clip_norm),
                    active=True,
                    cancel_requested=False,
                    attempts=0,
                    created_at=self._clock(),
                    created_by=created_by,
                    idempotency_key=idempotency_key,
                    request_sha256=request_sha256,
                )
                session.add(job)
                session.flush()
                payload = {
                    "planned": [s.to_dict() for s in planned],
                    "projected_epsilon": projected,
                    "budget_epsilon": ds.budget_epsilon,
                    "actor": created_by,
                }
                self._append(session, ds, "reserve", payload, job_id=job.id)
        if refusal is not None:
            raise refusal
        return job

    def charge(self, job_id: str, segment: DpSegment, *, attempt: str | None = None) -> None:
        """Charge ``segment.steps`` steps of σ, q to a running job *before* they run.

        Steps inside the job's reservation always fit; steps beyond it are checked against the
        budget like a new submission. With ``attempt`` (what workers pass) the charge is refused
        unless that attempt still owns the running job.

        Raises:
            BudgetExceededError: the extra steps do not fit (recorded as a refusal first).
            StaleAttemptError: ``attempt`` no longer owns the job.
            LedgerError: the job is finished or unknown.
        """
        refusal: BudgetExceededError | None = None
        with self.db.write_session() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise NotFoundError(f"job {job_id!r} not found")
            ds = self._lock(session, job.dataset_id, None)
            session.refresh(job)
            if not job.active:
                raise LedgerError(f"job {job_id} is {job.state}; it cannot be charged")
            if attempt is not None and (job.state != "running" or job.attempt_token != attempt):
                raise StaleAttemptError(f"job {job_id}: this attempt was fenced off")
            key = segment_key(segment.noise_multiplier, segment.sample_rate)
            step = {key: segment.steps}
            within = subtract_counts(_planned(job), job.charged).get(key, 0) >= segment.steps
            if not within:
                committed = add_counts(self._committed(session, ds), step)
                projected = epsilon_of(committed, delta=ds.budget_delta, precise=False)
                if projected > ds.budget_epsilon or not math.isfinite(projected):
                    payload = {
                        "segment": segment.to_dict(),
                        "requested_epsilon": projected,
                        "budget_epsilon": ds.budget_epsilon,
                    }
                    self._append(session, ds, "refuse", payload, job_id=job.id)
                    refusal = BudgetExceededError(
                        f"step refused: data set {ds.name!r} would reach epsilon="
                        f"{projected:.4f} > budget {ds.budget_epsilon:g}",
                        requested_epsilon=projected,
                        budget_epsilon=ds.budget_epsilon,
                    )
            if refusal is None:
                job.charged = add_counts(job.charged, step)
                job.steps_done = job.steps_done + segment.steps
                job.noise_multiplier = segment.noise_multiplier
                job.sample_rate = segment.sample_rate
                ds.charged = add_counts(ds.charged, step)
                self._append(session, ds, "charge", {"segment": segment.to_dict()}, job_id=job.id)
        if refusal is not None:
            raise refusal

    def finish_job(
        self,
        job_id: str,
        *,
        state: str,
        error: str | None = None,
        result: dict[str, Any] | None = None,
        report_path: str | None = None,
        expect_state: str | None = None,
        attempt: str | None = None,
    ) -> Job:
        """End a job (succeeded, failed or cancelled) and release its unspent reservation.

        Idempotent: finishing a finished job returns it unchanged; with ``expect_state`` the job
        is only finished if it is still in that state.

        Raises:
            StaleAttemptError: ``attempt`` given and it no longer owns the job.
        """
        if state not in TERMINAL_STATES:
            raise LedgerError(f"not a terminal state: {state!r}")
        with self.db.write_session() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise NotFoundError(f"job {job_id!r} not found")
            ds = self._lock(session, job.dataset_id, None)
            session.refresh(job)
            if not job.active or (expect_state is not None and job.state != expect_state):
                return job
            if attempt is not None and job.attempt_token != attempt:
                raise StaleAttemptError(f"job {job_id}: this attempt was fenced off")
            released = subtract_counts(_planned(job), job.charged)
            job.active = False
            job.state = state
            job.attempt_token = None
            job.error = error
            job.finished_at = self._clock()
            if result is not None:
                job.result = result
            if report_path is not None:
                job.report_path = report_path
            payload = {
                "state": state,
                "charged": job.charged,
                "released": released,
                "error": error,
            }
            self._append(session, ds, "release", payload, job_id=job.id)
            return job

    # -- internals -------------------------------------------------------------------------------

    def _lock(self, session: Session, dataset_id: str, tenant: str | None) -> Dataset:
        stmt = select(Dataset).where(Dataset.id == dataset_id)
        if self.db.is_postgres:
            stmt = stmt.with_for_update()
        stmt = stmt.execution_options(populate_existing=True)
        ds = session.scalars(stmt).one_or_none()
        if ds is None or (tenant is not None and ds.tenant != tenant):
            raise NotFoundError(f"data set {dataset_id!r} not found")
        return ds

    @staticmethod
    def _active_jobs(session: Session, dataset_id: str) -> list[Job]:
        stmt = select(Job).where(Job.dataset_id == dataset_id, Job.active.is_(True))
        return list(session.scalars(stmt).all())

    def _committed(self, session: Session, ds: Dataset) -> dict[str, int]:
        reserved = [
            subtract_counts(_planned(j), j.charged) for j in self._active_jobs(session, ds.id)
        ]
        return add_counts(ds.charged, *reserved)

    def _append(
        self,
        session: Session,
        ds: Dataset,
        kind: str,
        payload: dict[str, Any],
        *,
        job_id: str | None = None,
    ) -> LedgerEntry:
        seq = ds.entry_count + 1
        now = self._clock()
        prev = ds.head_hash or GENESIS_HASH
        digest = entry_hash(
            prev_hash=prev,
            dataset_id=ds.id,
            seq=seq,
            kind=kind,
            job_id=job_id,
            payload=payload,
            created_at=now,
        )
        entry = LedgerEntry(
            dataset_id=ds.id,
            seq=seq,
            kind=kind,
            job_id=job_id,
            payload=payload,
            created_at=now,
            prev_hash=prev,
            hash=digest,
        )
        session.add(entry)
        ds.entry_count = seq
        ds.head_hash = digest
        return entry


def _planned(job: Job) -> dict[str, int]:
    return counts_from_segments(DpSegment.from_dict(d) for d in job.planned)


def registration_payload(ds: Dataset, *, actor: str | None = None) -> dict[str, Any]:
    """The fields of a data set that its ``register`` entry pins (verify compares them)."""
    payload: dict[str, Any] = {
        "tenant": ds.tenant,
        "name": ds.name,
        "budget_epsilon": ds.budget_epsilon,
        "budget_delta": ds.budget_delta,
        "privacy_unit": ds.privacy_unit,
        "num_units": ds.num_units,
    }
    if actor is not None:
        payload["actor"] = actor
    return payload
