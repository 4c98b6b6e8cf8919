"""Audited training runs for ``bench_audit.py`` and the audit's end-to-end test: synthetic traces
with audit canaries → ``run_job`` → ``audit_canaries.json`` → :func:`run_audit`.

Also the deliberately broken engine that shows the audit catches bugs: it adds no noise but lets
the accountant record σ, so the run reports an ε it does not have. It lives here, not in the
package, because it is a test instrument: shipping it would put a noise switch next to the real
engine. It swaps the engine's public ``noise`` source after ``make_private``; a constructor
argument for the noise source (see the issue-19 closing note) would make the subclass unnecessary.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from privacy_finetuner.audit.runner import AuditResult, finish_audit
from privacy_finetuner.config.schema import JobConfig
from privacy_finetuner.data.audit_canaries import CanaryPlan, canary_traces
from privacy_finetuner.data.loaders import write_traces
from privacy_finetuner.data.synth import generate_traces
from privacy_finetuner.engine import PrivacyEngine
from privacy_finetuner.engine.noise import NoiseSource
from privacy_finetuner.training import RunResult, run_job

__all__ = ["NoiselessEngine", "run_audited_job", "write_audit_data"]


class _SilentNoise(NoiseSource):
    """Zeros where the Gaussian should be: the planted bug."""

    def gaussian(self, like: Tensor, *, std: float) -> Tensor:
        dtype = like.dtype if like.dtype == torch.float64 else torch.float32
        return torch.zeros(like.shape, dtype=dtype, device=self.device)


class NoiselessEngine(PrivacyEngine):
    """A :class:`PrivacyEngine` that adds no noise while its accountant still records the
    configured σ (the planted bug, and the non-private baseline whose reported ε is ignored)."""

    def make_private(self, **kwargs: Any) -> Any:
        """``make_private``, then the noise source replaced by zeros."""
        attached = super().make_private(**kwargs)
        noise = self.noise
        if noise is None:  # pragma: no cover - make_private always sets it
            raise RuntimeError("make_private did not set a noise source")
        self.noise = _SilentNoise(device=noise.device, secure_mode=False, seed=0)
        return attached


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
    out_dir.mkdir(parents=True, exist_ok=True)
    records = [t.to_openai() for t in generate_traces(traces, seed=seed).traces]
    records += canary_traces(plan)
    random.Random(seed).shuffle(records)  # nosec B311 - data order only
    train = out_dir / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    validation = out_dir / "validation.jsonl"
    write_traces(generate_traces(validation_traces, seed=seed + 99_991).traces, validation)
    return train, validation


def run_audited_job(
    config: JobConfig,
    run_dir: Path,
    plan: CanaryPlan,
    *,
    noiseless: bool = False,
    candidates: int = 10_000,
) -> tuple[RunResult, AuditResult]:
    """Train with ``run_job`` (the data paths in ``config`` must already hold the canaries), save
    the canary plan in the run directory and audit it."""
    result = run_job(config, run_dir=run_dir, make_engine=NoiselessEngine if noiseless else None)
    return result, finish_audit(run_dir, plan, candidates=candidates)
