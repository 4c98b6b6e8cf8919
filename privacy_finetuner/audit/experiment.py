"""Audited training runs for the benchmark and tests: synthetic traces + audit canaries →
``run_job`` → ``audit_canaries.json`` → :func:`run_audit`.

Also the deliberately broken engine used to show the audit catches bugs: it adds no noise but
lets the accountant record σ, so the run reports an ε it does not have.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from privacy_finetuner.audit.canaries import CANARY_FILE, CanaryPlan, canary_traces
from privacy_finetuner.audit.runner import AuditResult, run_audit

__all__ = ["make_noiseless_engine", "run_audited_job", "write_audit_data"]


def make_noiseless_engine(**kwargs: Any) -> Any:
    """A :class:`~privacy_finetuner.engine.PrivacyEngine` with the noise switched off while the
    accountant still records the configured σ: the planted bug (and the non-private baseline,
    whose reported ε is then ignored)."""
    from privacy_finetuner.engine import PrivacyEngine

    class _NoiselessEngine(PrivacyEngine):
        def _add_noise_and_scale(self, clipper: Any, noise: Any) -> None:
            sigma = self.noise_multiplier
            self.noise_multiplier = 0.0
            try:
                super()._add_noise_and_scale(clipper, noise)
            finally:
                self.noise_multiplier = sigma

    return _NoiselessEngine(**kwargs)


def write_audit_data(
    out_dir: Path,
    plan: CanaryPlan,
    *,
    traces: int,
    validation_traces: int = 16,
    seed: int = 0,
) -> tuple[Path, Path]:
    """``train.jsonl`` (synthetic agent traces with the plan's included canaries shuffled in)
    and ``validation.jsonl`` (other synthetic users) in ``out_dir``."""
    from privacy_finetuner.data.loaders import write_traces
    from privacy_finetuner.data.synth import generate_traces

    out_dir.mkdir(parents=True, exist_ok=True)
    records = [t.to_openai() for t in generate_traces(traces, seed=seed).traces]
    records += canary_traces(plan)
    random.Random(seed).shuffle(records)  # noqa: S311  # nosec B311 - data order only
    train = out_dir / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    validation = out_dir / "validation.jsonl"
    write_traces(generate_traces(validation_traces, seed=seed + 99_991).traces, validation)
    return train, validation


def run_audited_job(
    config: Any,
    run_dir: Path,
    plan: CanaryPlan,
    *,
    noiseless: bool = False,
    candidates: int = 10_000,
) -> tuple[Any, AuditResult]:
    """Train with ``run_job`` (the data paths in ``config`` must already hold the canaries), save
    the canary plan in the run directory and audit it."""
    from privacy_finetuner.training import run_job

    result = run_job(
        config, run_dir=run_dir, make_engine=make_noiseless_engine if noiseless else None
    )
    plan.save(run_dir / CANARY_FILE)
    return result, run_audit(run_dir, candidates=candidates)
