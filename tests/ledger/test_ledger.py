"""Budget arithmetic, refusal at submission, charge-before-step and release."""

from __future__ import annotations

from typing import Any

import pytest

from privacy_finetuner.accounting import DpSegment, compute_epsilon
from privacy_finetuner.errors import BudgetExceededError, ConfigError, LedgerError, NotFoundError
from privacy_finetuner.ledger import Job, Ledger, verify_ledger

SEG = DpSegment(noise_multiplier=1.0, sample_rate=0.01, steps=50)


def _one(sigma: float = 1.0, q: float = 0.01) -> DpSegment:
    return DpSegment(noise_multiplier=sigma, sample_rate=q, steps=1)


def _submit(ledger: Ledger, ds_id: str, planned: list[DpSegment], **kw: Any) -> Job:
    return ledger.submit_job(
        dataset_id=ds_id, tenant="t", planned=planned, config={}, clip_norm=1.0, delta=1e-5, **kw
    )


def test_spent_epsilon_is_pld_of_all_charged_steps(any_ledger: Ledger) -> None:
    ledger = any_ledger
    ds = ledger.register_dataset(tenant="t", name="d", budget_epsilon=10, budget_delta=1e-5)
    a = _submit(ledger, ds.id, [DpSegment(noise_multiplier=1.0, sample_rate=0.01, steps=5)])
    b = _submit(ledger, ds.id, [DpSegment(noise_multiplier=1.5, sample_rate=0.02, steps=3)])
    for _ in range(5):
        ledger.charge(a.id, _one(1.0, 0.01))
    for _ in range(3):
        ledger.charge(b.id, _one(1.5, 0.02))
    expected = compute_epsilon(
        [
            DpSegment(noise_multiplier=1.0, sample_rate=0.01, steps=5),
            DpSegment(noise_multiplier=1.5, sample_rate=0.02, steps=3),
        ],
        delta=1e-5,
    )
    assert ledger.spent_epsilon(ds.id) == pytest.approx(expected, rel=1e-9)
    status = ledger.budget(ds.id)
    assert status.spent_epsilon == pytest.approx(expected, rel=1e-9)
    assert status.committed_epsilon == pytest.approx(expected, rel=1e-9)  # all reserved spent


def test_every_user_is_charged_for_every_job(ledger: Ledger) -> None:
    """Issue 14 finding 4: a job trains on every user of its data set, so a user's ε is the
    composition of all jobs (a client's ``users`` label was never applied by the trainer)."""
    ds = ledger.register_dataset(
        tenant="t", name="d", budget_epsilon=10, budget_delta=1e-5, privacy_unit="user"
    )
    a = _submit(
        ledger,
        ds.id,
        [DpSegment(noise_multiplier=1.0, sample_rate=0.01, steps=4)],
        privacy_unit="user",
    )
    b = _submit(
        ledger,
        ds.id,
        [DpSegment(noise_multiplier=1.0, sample_rate=0.01, steps=2)],
        privacy_unit="user",
    )
    for _ in range(4):
        ledger.charge(a.id, _one())
    for _ in range(2):
        ledger.charge(b.id, _one())
    both = compute_epsilon([DpSegment(noise_multiplier=1.0, sample_rate=0.01, steps=6)], delta=1e-5)
    assert ledger.spent_epsilon(ds.id, user="alice") == pytest.approx(both)
    assert ledger.spent_epsilon(ds.id, user="bob") == pytest.approx(both)
    assert ledger.spent_epsilon(ds.id, user="carol") == pytest.approx(both)
    with pytest.raises(TypeError):
        _submit(ledger, ds.id, [SEG], privacy_unit="user", users=["alice"])


def test_per_user_queries_and_jobs_on_per_example_data_are_refused(ledger: Ledger) -> None:
    """A user with k traces of a per-example data set has up to about kε: the ledger refuses to
    report the example-level ε as that user's, and refuses per-user jobs it cannot charge."""
    ds = ledger.register_dataset(tenant="t", name="e", budget_epsilon=10, budget_delta=1e-5)
    with pytest.raises(ConfigError, match="per example"):
        ledger.spent_epsilon(ds.id, user="alice")
    with pytest.raises(ConfigError, match="per-user job"):
        _submit(ledger, ds.id, [SEG], privacy_unit="user")


def test_stale_attempt_is_fenced_off(any_ledger: Ledger) -> None:
    """Charge and finish with an attempt token that no longer owns the job are refused."""
    from privacy_finetuner.ledger import lifecycle
    from privacy_finetuner.ledger.store import StaleAttemptError

    ledger = any_ledger
    ds = ledger.register_dataset(tenant="t", name="f", budget_epsilon=10, budget_delta=1e-5)
    job = _submit(ledger, ds.id, [DpSegment(noise_multiplier=1.0, sample_rate=0.01, steps=4)])
    first = lifecycle.claim_job(ledger.db, job.id, worker="w1", run_dir="r")
    assert first is not None
    ledger.charge(job.id, _one(), attempt=first.token)
    assert lifecycle.requeue_stale(ledger.db, job.id, timeout_s=-1.0)  # heartbeat "stale"
    assert not lifecycle.heartbeat(ledger.db, job.id, first.token)
    second = lifecycle.claim_job(ledger.db, job.id, worker="w2", run_dir="r")
    assert second is not None and second.token != first.token
    with pytest.raises(StaleAttemptError):
        ledger.charge(job.id, _one(), attempt=first.token)
    for _ in range(3):
        ledger.charge(job.id, _one(), attempt=second.token)
    with pytest.raises(StaleAttemptError):
        ledger.finish_job(job.id, state="failed", attempt=first.token)
    done = ledger.finish_job(job.id, state="succeeded", attempt=second.token)
    assert done.state == "succeeded" and done.steps_done == 4
    assert sum(done.charged.values()) == 4
    assert verify_ledger(ledger.db).ok


def test_admission_outside_the_lock_is_rechecked(ledger: Ledger) -> None:
    """An ε computed on a stale snapshot of the commitments is not used."""
    from privacy_finetuner.ledger.store import AdmissionChanged

    ds = ledger.register_dataset(tenant="t", name="g", budget_epsilon=10, budget_delta=1e-5)
    admission = ledger.admission(ds.id, [SEG])
    _submit(ledger, ds.id, [SEG])  # the commitments move
    with pytest.raises(AdmissionChanged):
        _submit(ledger, ds.id, [SEG], admission=admission)
    fresh = ledger.admission(ds.id, [SEG])
    job = _submit(ledger, ds.id, [SEG], admission=fresh)
    assert job.planned_epsilon == pytest.approx(fresh.projected_epsilon)


def test_submission_refused_with_numbers_and_recorded(any_ledger: Ledger) -> None:
    ledger = any_ledger
    budget = (compute_epsilon([SEG], delta=1e-5) + compute_epsilon([SEG, SEG], delta=1e-5)) / 2
    ds = ledger.register_dataset(tenant="t", name="d", budget_epsilon=budget, budget_delta=1e-5)
    first = _submit(ledger, ds.id, [SEG])
    with pytest.raises(BudgetExceededError) as info:
        _submit(ledger, ds.id, [SEG])
    assert info.value.budget_epsilon == budget
    assert info.value.requested_epsilon > budget
    assert "refused" in str(info.value) and f"{budget:g}" in str(info.value)
    assert ledger.budget(ds.id).active_jobs == 1
    # the refusal is in the chain
    assert verify_ledger(ledger.db).ok
    # releasing the unspent reservation makes room again
    ledger.finish_job(first.id, state="cancelled")
    assert ledger.budget(ds.id).committed_epsilon == 0.0
    _submit(ledger, ds.id, [SEG])


def test_charges_inside_reservation_always_fit_extra_steps_checked(ledger: Ledger) -> None:
    eps = compute_epsilon([DpSegment(noise_multiplier=1.0, sample_rate=0.01, steps=3)], delta=1e-5)
    ds = ledger.register_dataset(tenant="t", name="d", budget_epsilon=eps * 1.02, budget_delta=1e-5)
    job = _submit(ledger, ds.id, [DpSegment(noise_multiplier=1.0, sample_rate=0.01, steps=3)])
    for _ in range(3):
        ledger.charge(job.id, _one())
    with pytest.raises(BudgetExceededError):
        ledger.charge(job.id, DpSegment(noise_multiplier=1.0, sample_rate=0.01, steps=200))
    ledger.finish_job(job.id, state="succeeded")
    with pytest.raises(LedgerError):
        ledger.charge(job.id, _one())
    assert ledger.spent_epsilon(ds.id) == pytest.approx(eps)
    assert verify_ledger(ledger.db).ok


def test_crash_never_under_charges(ledger: Ledger) -> None:
    """A job that dies after charging a step keeps that step on the books."""
    ds = ledger.register_dataset(tenant="t", name="d", budget_epsilon=10, budget_delta=1e-5)
    job = _submit(ledger, ds.id, [SEG])
    executed = 0
    for _ in range(7):
        ledger.charge(job.id, _one())  # charge first …
        executed += 1  # … then "run" the step
    ledger.charge(job.id, _one())  # charged, then the process dies before running it
    ledger.finish_job(job.id, state="failed", error="worker lost")
    charged = sum(ledger.get_dataset(ds.id).charged.values())
    assert charged >= executed
    assert ledger.budget(ds.id).committed_epsilon == ledger.budget(ds.id).spent_epsilon


def test_validation_and_tenancy(ledger: Ledger) -> None:
    ds = ledger.register_dataset(tenant="t", name="d", budget_epsilon=1, budget_delta=1e-5)
    with pytest.raises(ConfigError):
        ledger.register_dataset(tenant="t", name="d", budget_epsilon=1, budget_delta=1e-5)
    with pytest.raises(ConfigError):
        ledger.register_dataset(
            tenant="t", name="x", budget_epsilon=1, budget_delta=1e-5, privacy_unit="row"
        )
    with pytest.raises(NotFoundError):
        ledger.get_dataset(ds.id, tenant="other")
    with pytest.raises(NotFoundError):
        ledger.submit_job(
            dataset_id=ds.id, tenant="other", planned=[SEG], config={}, clip_norm=1.0, delta=1e-5
        )
    user_ds = ledger.register_dataset(
        tenant="t", name="u", budget_epsilon=9, budget_delta=1e-5, privacy_unit="user"
    )
    with pytest.raises(ConfigError):
        _submit(ledger, user_ds.id, [SEG], privacy_unit="example")
    rows, total = ledger.list_datasets(tenant="t", limit=1, offset=0)
    assert total == 2 and len(rows) == 1
