"""Two calls for the training job's ``--audit``: plant the canaries, audit at the end.

In ``prepare_data`` (after the train/validation split, so no canary user is held out)::

    train_traces, plan = add_audit_canaries(train_traces, canaries=64, repeats=10, seed=seed)

and in ``finish_run`` (after the report is written)::

    finish_audit(run, plan)
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from privacy_finetuner.audit.canaries import CANARY_FILE, CanaryPlan, canary_traces, plan_canaries
from privacy_finetuner.audit.runner import AuditResult, run_audit

__all__ = ["add_audit_canaries", "finish_audit"]


def add_audit_canaries(
    traces: list[Any], *, canaries: int = 64, repeats: int = 10, seed: int = 0
) -> tuple[list[Any], CanaryPlan]:
    """``traces`` with the included audit canaries shuffled in, and the plan to save later."""
    from privacy_finetuner.data.records import parse_trace

    plan = plan_canaries(canaries, repeats=repeats, seed=seed)
    out = list(traces) + [parse_trace(r) for r in canary_traces(plan)]
    random.Random(seed).shuffle(out)  # noqa: S311  # nosec B311 - data order only
    return out, plan


def finish_audit(run_dir: str | Path, plan: CanaryPlan, **kwargs: Any) -> AuditResult:
    """Save the plan into the run directory and audit the run (writes ``audit.json``, embeds the
    section in ``report.html``). The caller decides what to do with ``result.violation``."""
    run = Path(run_dir)
    plan.save(run / CANARY_FILE)
    return run_audit(run, **kwargs)
