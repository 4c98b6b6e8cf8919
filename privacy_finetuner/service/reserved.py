"""The plan the ledger reserved for a job, handed to the trainer so it checks before step 0.

The service plans (σ, q, steps) from its count of privacy units and reserves exactly that on the
data set's budget; the trainer recounts units from the data it actually loaded. If the two
differ, every step would fall outside the reservation (and a job could be refused part-way), so
the trainer calls :func:`check_reserved_plan` right after planning and refuses to start on a
mismatch, naming both plans. The service sets the plan for the duration of one job with
:func:`reserved_plan` (a context variable: the job runs in the thread or process that set it).
Outside the service nothing is set and the check does nothing. Standard library only, so the
trainer can import it without the ``service`` extra.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from privacy_finetuner.errors import ConfigError

__all__ = ["ReservedPlan", "check_reserved_plan", "current_reserved_plan", "reserved_plan"]


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
    """Make ``plan`` the reserved plan of the code run inside the block."""
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
