"""The end of a run: final evaluation, the model in safetensors, and the audit documents."""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from privacy_finetuner._version import __version__
from privacy_finetuner.config.planning import Plan
from privacy_finetuner.config.schema import JobConfig
from privacy_finetuner.report import REPORT_SCHEMA_VERSION, write_documents
from privacy_finetuner.training.prepare import PreparedData

__all__ = ["build_report", "finish_run"]


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def build_report(
    *,
    eng: Any,
    prepared: PreparedData,
    config: JobConfig,
    plan: Plan,
    state: Any,
    status: str,
    epsilon: float,
    final: dict[str, Any],
) -> dict[str, Any]:
    """The content of ``privacy_report.json``."""
    privacy = config.privacy
    model = prepared.loaded.model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    warnings_ = list(plan.warnings)
    if not privacy.secure_mode:
        warnings_.append(
            "secure_mode is off: noise and sampling come from a seeded PRNG (reproducible; fine "
            "for experiments, use privacy.secure_mode: true in production)"
        )
    if prepared.guard.note and config.guard.enabled:
        warnings_.append(f"context guard: {prepared.guard.note}")
    if status == "budget_exhausted":
        warnings_.append(f"training stopped at the privacy budget after {eng.steps} steps")
    stats = prepared.train_stats
    curve = [list(point) for point in state.epsilon]
    if curve and curve[-1][0] == eng.steps and math.isfinite(epsilon):
        curve[-1][1] = epsilon  # the exact ε, not the coarse-grid upper bound of the curve
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "version": __version__,
        "status": status,
        "privacy": {
            "epsilon": _finite(epsilon),
            "delta": privacy.delta,
            "target_epsilon": privacy.target_epsilon,
            "epsilon_valid": bool(getattr(eng, "epsilon_valid", True)),
            "accountant": privacy.accountant,
            "privacy_unit": privacy.privacy_unit,
            "sampling": "poisson",
            "sample_rate": plan.sample_rate,
            "expected_batch_size": plan.sample_rate * prepared.num_units(privacy.privacy_unit),
            "noise_multiplier": plan.noise_multiplier,
            "max_grad_norm": privacy.max_grad_norm,
            "steps": eng.steps,
            "planned_steps": plan.steps,
            "num_units": prepared.num_units(privacy.privacy_unit),
            "max_examples_per_user": privacy.max_examples_per_user,
            "secure_mode": privacy.secure_mode,
            "history": [s.to_dict() for s in eng.accountant.history],
        },
        "data": {
            "source": prepared.source,
            "traces": prepared.num_traces,
            "invalid_records": len(prepared.invalid),
            "invalid": [{"line": r.line, "reason": r.reason} for r in prepared.invalid[:100]],
            "users": prepared.num_users,
            "train_examples": len(prepared.train),
            "validation_examples": len(prepared.validation),
            "max_length": config.data.max_length,
            "truncated": stats.truncated,
            "dropped_no_targets": stats.dropped_no_targets,
            "train_tokens": stats.tokens,
            "target_tokens": stats.target_tokens,
            "canaries": len(prepared.canaries),
        },
        "guard": {
            "enabled": config.guard.enabled,
            "applied": prepared.guard.applied,
            "strategy": config.guard.strategy,
            "sensitivity": config.guard.sensitivity,
            "counts": prepared.guard.counts,
            "note": prepared.guard.note,
        },
        "model": {
            "base": prepared.loaded.base,
            "method": prepared.loaded.method,
            "trainable_parameters": trainable,
            "total_parameters": total,
        },
        "training": config.training.model_dump(mode="json"),
        "metrics": {
            "train_loss": state.train_loss,
            "validation_loss": [[s, _finite(v)] for s, v in state.validation_loss],
            "epsilon": curve,
            "final": {k: _finite(v) for k, v in final.items()},
        },
        "timing": {
            "train_seconds": round(state.wall_seconds, 2),
            "steps_per_second": (
                round(eng.steps / state.wall_seconds, 3) if state.wall_seconds else None
            ),
        },
        "environment": {"python": platform.python_version()},
        "warnings": warnings_,
    }


def finish_run(
    run: Path,
    eng: Any,
    prepared: PreparedData,
    config: JobConfig,
    plan: Plan,
    state: Any,
    status: str,
    epsilon: float,
    evaluate: Callable[[], dict[str, Any]],
) -> tuple[Path, dict[str, Any]]:
    """Evaluate, save the model and tokenizer, and write the report files (report last)."""
    from privacy_finetuner.modeling.loading import save_trained

    final = evaluate() if prepared.validation else {}
    if config.output.save_model:
        save_trained(prepared.loaded, run)
    if prepared.canaries:
        payload = [c.to_dict() for c in prepared.canaries]
        (run / "canaries.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    report = build_report(
        eng=eng,
        prepared=prepared,
        config=config,
        plan=plan,
        state=state,
        status=status,
        epsilon=epsilon,
        final=final,
    )
    path = write_documents(run, report, html=config.output.report_html)
    return path, report["metrics"]["final"]
