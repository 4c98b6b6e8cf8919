"""Concurrent submissions never double-spend (row lock on PostgreSQL, BEGIN IMMEDIATE on SQLite)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from privacy_finetuner.accounting import DpSegment
from privacy_finetuner.errors import BudgetExceededError
from privacy_finetuner.ledger import Database, Job, Ledger, LedgerEntry, epsilon_of, verify_ledger
from privacy_finetuner.ledger.budget import counts_from_segments

SEG = DpSegment(noise_multiplier=1.0, sample_rate=0.01, steps=50)


def _max_jobs(budget: float) -> int:
    """How many SEG jobs fit, computed sequentially with the admission grid."""
    k = 0
    while epsilon_of(counts_from_segments([SEG] * (k + 1)), delta=1e-5, precise=False) <= budget:
        k += 1
    return k


def _hammer(db: Database, submissions: int, threads: int) -> None:
    budget = epsilon_of(counts_from_segments([SEG] * 10), delta=1e-5, precise=False) + 1e-9
    ds = Ledger(db).register_dataset(
        tenant="t", name="shared", budget_epsilon=budget, budget_delta=1e-5
    )

    def submit(_: int) -> str:
        try:
            Ledger(db).submit_job(
                dataset_id=ds.id, tenant="t", planned=[SEG], config={}, clip_norm=1.0, delta=1e-5
            )
            return "accepted"
        except BudgetExceededError:
            return "refused"

    with ThreadPoolExecutor(threads) as pool:
        outcomes = list(pool.map(submit, range(submissions)))
    accepted = outcomes.count("accepted")
    assert accepted == _max_jobs(budget) == 10
    assert outcomes.count("refused") == submissions - accepted
    with db.read_session() as session:
        jobs = session.scalar(select(func.count()).select_from(Job).where(Job.dataset_id == ds.id))
        kinds = dict(
            session.execute(
                select(LedgerEntry.kind, func.count())
                .where(LedgerEntry.dataset_id == ds.id)
                .group_by(LedgerEntry.kind)
            ).all()
        )
    assert jobs == accepted  # every accepted job is accounted for
    assert kinds == {"register": 1, "reserve": accepted, "refuse": submissions - accepted}
    status = Ledger(db).budget(ds.id)
    assert status.committed_epsilon <= budget  # never over budget
    assert verify_ledger(db).ok


@pytest.mark.postgres
def test_100_parallel_submissions_postgres(pg_db: Database) -> None:
    _hammer(pg_db, submissions=100, threads=32)


def test_parallel_submissions_sqlite(sqlite_db: Database) -> None:
    _hammer(sqlite_db, submissions=30, threads=8)
