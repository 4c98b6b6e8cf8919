"""What a training job is to its callers: the job function, its result, and one status vocabulary.

The trainer (:func:`privacy_finetuner.training.run_job`), the service's simulated job and any job
function named by ``PF_JOB_FUNCTION`` share this contract, so the service can run any of them
without importing the trainer (and torch). A run's status is written to ``status.json`` and
returned in :class:`RunResult`; the service maps it to the state of its job with
:func:`job_outcome`, in this one place.

The plan the ledger reserved for a job is part of the contract too. The service plans (σ, q,
steps) from its count of privacy units and reserves exactly that on the data set's budget; the
trainer recounts units from the data it actually loaded. If the two differ, every step would fall
outside the reservation (and a job could be refused part-way), so a job function calls
:func:`check_reserved_plan` right after planning and refuses to start on a mismatch, naming both
plans. The service sets the plan for the duration of one job with :func:`reserved_plan` (a
context variable: the job runs in the thread or process that set it). Outside the service nothing
is set and the check does nothing. Standard library only, so the trainer needs neither the
``service`` extra nor an import of ``privacy_finetuner.service``.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from privacy_finetuner.errors import ConfigError

if TYPE_CHECKING:
    from privacy_finetuner.accounting import DpSegment
    from privacy_finetuner.config.schema import JobConfig

__all__ = [
    "JobFunction",
    "JobState",
    "ReservedPlan",
    "RunResult",
    "RunStatus",
    "check_reserved_plan",
    "current_reserved_plan",
    "job_outcome",
    "reserved_plan",
]


class RunStatus(StrEnum):
    """The state of one run directory (``status.json``'s ``state``) and of a run's result."""

    RUNNING = "running"
    COMPLETED = "completed"
    BUDGET_EXHAUSTED = "budget_exhausted"  # stopped early at the budget; its ε is still valid
    CANCELLED = "cancelled"  # should_stop; a checkpoint allows resuming
    INTERRUPTED = "interrupted"  # Ctrl-C or a signal; a checkpoint allows resuming
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        """The run wrote all its outputs, ``privacy_report.json`` included."""
        return self in (RunStatus.COMPLETED, RunStatus.BUDGET_EXHAUSTED)

    @property
    def resumable(self) -> bool:
        """The run stopped on request and left a checkpoint to continue from."""
        return self in (RunStatus.CANCELLED, RunStatus.INTERRUPTED)


class JobState(StrEnum):
    """The state of a service job (the ledger's ``Job.state``)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


def job_outcome(
    status: RunStatus | str, *, stop_requested: bool = False
) -> tuple[JobState, str | None]:
    """The service job's final state for a run that returned ``status``, and its error message.

    A run stopped by the budget did not do the work asked for, so its job failed (its ε is still
    valid and charged); a cancelled or interrupted run, or one whose job was asked to stop, was
    cancelled.

    Raises:
        ConfigError: the configured job function returned a status that is not a
            :class:`RunStatus` value, or ``running``.
    """
    try:
        run = RunStatus(status)
    except ValueError:
        raise ConfigError(
            f"the job function returned an unknown run status {str(status)[:40]!r}; "
            f"expected one of {', '.join(s.value for s in RunStatus)}"
        ) from None
    if run is RunStatus.RUNNING:
        raise ConfigError("the job function returned while its run is still 'running'")
    if run is RunStatus.BUDGET_EXHAUSTED:
        return JobState.FAILED, "stopped: privacy budget exhausted"
    if run is RunStatus.FAILED:
        return JobState.FAILED, "the run failed"
    if run.resumable or stop_requested:
        return JobState.CANCELLED, None
    return JobState.SUCCEEDED, None


@dataclass
class RunResult:
    """What a job function returns.

    Attributes:
        run_dir: the run directory.
        epsilon: ε spent at ``delta`` (the PLD accountant's, from the recorded segments).
        delta: δ of the guarantee.
        steps: logical (noised) DP steps taken.
        noise_multiplier: σ.
        sample_rate: q.
        report_path: ``privacy_report.json``; None if the run was cancelled or interrupted.
        history: the accountant's segments as dicts (σ, q, steps).
        status: how the run ended.
        metrics: the exact final validation metrics, for the calling process only: internal
            diagnostics, not covered by ε (the released report omits them unless the validation
            set is declared public).
        audit: the audit's result (``privacy_finetuner.audit.runner.AuditResult``) after a run
            trained with ``audit.enabled``; None otherwise.
        rank: this process's rank in a data-parallel run (0 otherwise); only rank 0's run
            directory has files, so other ranks' results have no ``report_path`` or metrics.
    """

    run_dir: Path
    epsilon: float
    delta: float
    steps: int
    noise_multiplier: float
    sample_rate: float
    report_path: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    status: RunStatus = RunStatus.COMPLETED
    metrics: dict[str, float | None] = field(default_factory=dict)
    audit: object | None = None
    rank: int = 0


class JobFunction(Protocol):
    """A training job as the CLI and the service call it (``PF_JOB_FUNCTION``)."""

    def __call__(
        self,
        config: JobConfig,
        *,
        run_dir: Path,
        progress: bool = False,
        before_step: Callable[[DpSegment], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        resume: bool = False,
    ) -> RunResult:
        """Run (or, with ``resume``, continue) the job in ``run_dir``.

        Args:
            config: the validated job configuration.
            run_dir: the run directory the job writes.
            progress: show progress on the console.
            before_step: called with the segment ``(σ, q, steps=1)`` before each logical step;
                raising :class:`~privacy_finetuner.errors.BudgetExceededError` stops the run
                with :attr:`RunStatus.BUDGET_EXHAUSTED` (the ledger's charge-before-step).
            should_stop: polled before each step; True ends the run as
                :attr:`RunStatus.CANCELLED` after a checkpoint.
            on_event: receives progress events (``step``, ``total_steps``, ``epsilon``).
            resume: continue from the checkpoint in ``run_dir``.
        """
        ...


@dataclass(frozen=True)
class ReservedPlan:
    """What the ledger reserved: σ, q, steps, the unit count q was planned from, and the floor."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    num_units: int | None
    noise_floor: float | None = None


_CURRENT: contextvars.ContextVar[ReservedPlan | None] = contextvars.ContextVar(
    "pf_reserved_plan", default=None
)


@contextmanager
def reserved_plan(plan: ReservedPlan | None) -> Iterator[None]:
    """Make ``plan`` the reserved plan of the code run inside the block (the service's side)."""
    token = _CURRENT.set(plan)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current_reserved_plan() -> ReservedPlan | None:
    """The plan set by the enclosing :func:`reserved_plan`, if any."""
    return _CURRENT.get()


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)


def check_reserved_plan(
    *, noise_multiplier: float, sample_rate: float, steps: int, num_units: int
) -> None:
    """Refuse to train a plan other than the reserved one (no-op outside the service).

    Raises:
        ConfigError: σ, q, the step count or the unit count differ from the reservation, or σ is
            below the operator's noise floor; the message names both values.
    """
    plan = _CURRENT.get()
    if plan is None:
        return
    if plan.noise_floor is not None and noise_multiplier < plan.noise_floor:
        raise ConfigError(
            f"noise multiplier {noise_multiplier:g} is below the operator's floor "
            f"{plan.noise_floor:g}"
        )
    mismatches = []
    if plan.num_units is not None and int(num_units) != int(plan.num_units):
        mismatches.append(f"units {num_units} (reserved {plan.num_units})")
    if not _same(float(noise_multiplier), plan.noise_multiplier):
        mismatches.append(f"sigma {noise_multiplier!r} (reserved {plan.noise_multiplier!r})")
    if not _same(float(sample_rate), plan.sample_rate):
        mismatches.append(f"q {sample_rate!r} (reserved {plan.sample_rate!r})")
    if int(steps) != int(plan.steps):
        mismatches.append(f"steps {steps} (reserved {plan.steps})")
    if mismatches:
        raise ConfigError(
            "the job's plan differs from what the ledger reserved, refusing before step 0: "
            + "; ".join(mismatches)
        )
