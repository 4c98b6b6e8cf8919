"""An accounting-only dry run with ``run_job``'s signature, for smoke tests and load tests.

``PF_JOB_FUNCTION=privacy_finetuner.service.simulate:simulated_run_job`` makes the service "train"
without torch: every planned step is charged through ``before_step`` exactly like the real trainer
(so the ledger, the metrics and the job lifecycle are exercised), nothing is learned. Each step
sleeps ``PF_SIM_STEP_SECONDS`` (default 0). A checkpoint file lets a resumed run continue.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from privacy_finetuner.accounting import DpSegment, compute_epsilon
from privacy_finetuner.jobs import RunResult, RunStatus, check_reserved_plan, current_reserved_plan
from privacy_finetuner.ledger.budget import counts_from_segments, counts_to_segments
from privacy_finetuner.service.jobspec import plan_job

__all__ = ["simulated_run_job"]


def simulated_run_job(
    config: Any,
    *,
    run_dir: Path,
    progress: bool = False,
    before_step: Callable[[DpSegment], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = False,
) -> RunResult:
    """Charge the planned steps one by one; write a checkpoint and a JSON report.

    Like the trainer, it checks its plan against the ledger's reservation before step 0 (it
    plans from the reserved unit count, since it loads no data to count).
    """
    reserved = current_reserved_plan()
    plan = plan_job(config, num_units=reserved.num_units if reserved is not None else None)
    total = sum(s.steps for s in plan.segments)
    check_reserved_plan(
        noise_multiplier=plan.segments[0].noise_multiplier,
        sample_rate=plan.segments[0].sample_rate,
        steps=total,
        num_units=reserved.num_units if reserved and reserved.num_units else 0,
    )
    pause = float(os.environ.get("PF_SIM_STEP_SECONDS", "0"))
    ckpt = run_dir / "checkpoint.json"
    done = json.loads(ckpt.read_text())["steps"] if resume and ckpt.exists() else 0
    taken: list[DpSegment] = []
    stopped = False
    for segment in plan.segments:
        for _ in range(segment.steps):
            if done > 0:
                done -= 1
                taken.append(
                    DpSegment(
                        noise_multiplier=segment.noise_multiplier,
                        sample_rate=segment.sample_rate,
                        steps=1,
                    )
                )
                continue
            if should_stop is not None and should_stop():
                stopped = True
                break
            one = DpSegment(
                noise_multiplier=segment.noise_multiplier, sample_rate=segment.sample_rate, steps=1
            )
            if before_step is not None:
                before_step(one)
            if pause:
                time.sleep(pause)
            taken.append(one)
            tmp = ckpt.with_suffix(".tmp")
            tmp.write_text(json.dumps({"steps": len(taken)}))
            os.replace(tmp, ckpt)  # atomic: a kill never leaves a torn checkpoint
            if on_event is not None:
                on_event({"event": "step", "step": len(taken)})
    first = plan.segments[0]
    merged = counts_to_segments(counts_from_segments(taken))
    eps = compute_epsilon(merged, delta=plan.delta, pld_discretization=1e-3) if merged else 0.0
    report = run_dir / "report.json"
    report.write_text(
        json.dumps(
            {
                "epsilon": eps,
                "delta": plan.delta,
                "steps": len(taken),
                "noise_multiplier": first.noise_multiplier,
                "sample_rate": first.sample_rate,
                "simulated": True,
            }
        )
    )
    return RunResult(
        run_dir=run_dir,
        epsilon=eps,
        delta=plan.delta,
        steps=len(taken),
        noise_multiplier=first.noise_multiplier,
        sample_rate=first.sample_rate,
        report_path=report,
        history=[segment.to_dict() for segment in merged],
        status=RunStatus.CANCELLED if stopped else RunStatus.COMPLETED,
    )
