"""Shared helpers of the service tests (a module, so test files can import it by name)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from privacy_finetuner.service.deps import AppContext

SIMULATED = "privacy_finetuner.service.simulate:simulated_run_job"


@dataclass
class Protected:
    text: str
    findings: list[str] = field(default_factory=list)


class FakeGuard:
    """Masks the word 'secret'; stands in for ContextGuard where it is not installed."""

    def protect(self, text: str) -> Protected:
        hits = ["secret"] * text.count("secret")
        return Protected(text=text.replace("secret", "[REDACTED]"), findings=hits)


def tiny_config(steps: int = 5, sigma: float = 1.0) -> dict[str, Any]:
    """A job config whose plan is `steps` steps at σ with q = 64/900."""
    return {
        "training": {"max_steps": steps, "batch_size": 64},
        "privacy": {"noise_multiplier": sigma, "target_epsilon": None, "delta": 1e-5},
        "data": {"synthetic": {"n": 1000}},
    }


@dataclass
class Env:
    app: FastAPI
    client: TestClient
    ctx: AppContext
    keys: dict[str, str]

    def h(self, name: str) -> dict[str, str]:
        return {"X-API-Key": self.keys[name]}


# -- job functions for the fault tests (loaded by PF_JOB_FUNCTION="svc_helpers:<name>") ---------

PAUSE_AFTER_STEPS = 3
PAUSE_SECONDS = 3.0
_paused: set[str] = set()


def pausing_run_job(config: Any, *, run_dir: Any, before_step: Any = None, **kw: Any) -> Any:
    """The simulated job, whose first attempt of each job freezes like a SIGSTOPped worker:
    after ``PAUSE_AFTER_STEPS`` steps its heartbeat stops and it sleeps past the timeout, then
    it carries on as if nothing happened (what a paused process does when it is continued)."""
    import threading
    import time

    from privacy_finetuner.service.simulate import simulated_run_job

    job_id = run_dir.name
    first = job_id not in _paused
    _paused.add(job_id)
    count = {"n": 0}

    def step(segment: Any) -> None:
        if first and count["n"] == PAUSE_AFTER_STEPS:
            for thread in threading.enumerate():
                if thread.name == f"heartbeat-{job_id}":
                    thread.halt.set()  # type: ignore[attr-defined]
            time.sleep(PAUSE_SECONDS)
        count["n"] += 1
        if before_step is not None:
            before_step(segment)

    return simulated_run_job(config, run_dir=run_dir, before_step=step, **kw)


def fresh_dir_run_job(config: Any, *, run_dir: Any, resume: bool = False, **kw: Any) -> Any:
    """The simulated job with the trainer's run-directory rules: resuming needs a checkpoint
    (else CheckpointError), and a fresh run refuses a directory an earlier attempt used."""
    from privacy_finetuner.errors import CheckpointError, ConfigError
    from privacy_finetuner.service.simulate import simulated_run_job

    if resume and not (run_dir / "checkpoint.json").exists():
        raise CheckpointError("no checkpoint to resume from")
    if not resume and (run_dir / "status.json").exists():
        raise ConfigError("the run directory is already in use")
    (run_dir / "status.json").write_text("{}")
    return simulated_run_job(config, run_dir=run_dir, resume=resume, **kw)


def miscounting_run_job(config: Any, *, run_dir: Any, **kw: Any) -> Any:
    """A trainer that counted one unit more than the service planned from (finding 8)."""
    from privacy_finetuner.jobs import check_reserved_plan, current_reserved_plan
    from privacy_finetuner.service.jobspec import plan_job

    reserved = current_reserved_plan()
    assert reserved is not None and reserved.num_units is not None
    units = reserved.num_units + 1
    plan = plan_job(config, num_units=units)
    check_reserved_plan(
        noise_multiplier=plan.segments[0].noise_multiplier,
        sample_rate=plan.segments[0].sample_rate,
        steps=plan.segments[0].steps,
        num_units=units,
    )
    raise AssertionError("the reserved-plan check should have refused this job")


def low_noise_run_job(config: Any, *, run_dir: Any, before_step: Any = None, **kw: Any) -> Any:
    """A job that runs a σ other than the one it was admitted with (below the floor)."""
    from privacy_finetuner.accounting import DpSegment

    assert before_step is not None
    before_step(DpSegment(noise_multiplier=0.1, sample_rate=0.01, steps=1))
    raise AssertionError("the runner should have refused the step")
