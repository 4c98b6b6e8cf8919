"""The end of a run: final evaluation, the model in safetensors, and the run's documents.

Two kinds of document come out (see :mod:`privacy_finetuner.report.schema`): the released report,
which holds only what the reported ε covers, and the internal diagnostics, which hold the exact
statistics of the private data (losses, metrics on private held-out users, PII counts, token
counts, invalid-record entries, timings) for the operator and are never released.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from privacy_finetuner._version import __version__
from privacy_finetuner.accounting.relations import dp_accounting_name, epsilon_under_relation
from privacy_finetuner.config.planning import Plan
from privacy_finetuner.config.schema import JobConfig
from privacy_finetuner.report import REPORT_SCHEMA_VERSION, write_documents
from privacy_finetuner.report.schema import INTERNAL_FILE
from privacy_finetuner.training.prepare import PreparedData

__all__ = ["INSECURE_REASON", "build_internal", "build_report", "finish_run"]

#: Why ε does not hold when ``privacy.secure_mode`` is off.
INSECURE_REASON = (
    "privacy.secure_mode is false: noise and Poisson sampling come from a PRNG seeded with "
    "training.seed, so anyone who knows the seed can replay the batches and subtract the noise"
)
_NOT_POISSON_REASON = "the engine did not use Poisson sampling, which the accountant assumes"

NEIGHBOURING = "zero_out"


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def epsilon_validity(eng: Any, config: JobConfig) -> tuple[bool, list[str]]:
    """Whether the reported ε is a guarantee for this run, and if not, why."""
    reasons = [str(r) for r in getattr(eng, "invalid_reasons", ())]  # the engine's own
    if not config.privacy.secure_mode and not any("secure_mode" in r for r in reasons):
        reasons.insert(0, INSECURE_REASON)
    if not reasons and not bool(getattr(eng, "epsilon_valid", True)):
        reasons.append(_NOT_POISSON_REASON)
    return not reasons, reasons


def _public_final(config: JobConfig, final: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The final metrics that may be released: only on a validation set declared public."""
    if config.data.validation_public and final:
        return {k: _finite(v) for k, v in final.items()}, "public validation data"
    return {}, None


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
    dp_validation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The released ``privacy_report.json``: only what the reported ε covers.

    ``dp_validation`` is the released form of the DP validation estimate, if one was made.

    ``state`` is only read for the ε curve (a function of σ, q and the step count, all public).
    """
    privacy = config.privacy
    model = prepared.loaded.model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    valid, reasons = epsilon_validity(eng, config)
    warnings_ = list(plan.warnings)
    if not privacy.secure_mode:
        warnings_.append(
            "secure_mode is off, so ε is not valid (epsilon_valid: false): " + INSECURE_REASON
        )
    if status == "budget_exhausted":
        warnings_.append(f"training stopped at the privacy budget after {eng.steps} steps")
    curve = [list(point) for point in state.epsilon]
    if curve and curve[-1][0] == eng.steps and math.isfinite(epsilon):
        curve[-1][1] = epsilon  # the exact ε, not the coarse-grid upper bound of the curve
    history = list(eng.accountant.history)
    num_units = prepared.num_units(privacy.privacy_unit)
    public_final, final_data = _public_final(config, final)
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "kind": "released",
        "version": __version__,
        "status": status,
        "privacy": {
            "epsilon": _finite(epsilon),
            "delta": privacy.delta,
            "target_epsilon": privacy.target_epsilon,
            "epsilon_valid": valid,
            "epsilon_invalid_reasons": reasons,
            "accountant": privacy.accountant,
            "privacy_unit": privacy.privacy_unit,
            "neighbouring": NEIGHBOURING,
            "neighbouring_dp_accounting": dp_accounting_name(NEIGHBOURING),
            "epsilon_replace_one": _finite(
                epsilon_under_relation(history, delta=privacy.delta, relation="replace_one")
            ),
            "sampling": "poisson",
            "sample_rate": plan.sample_rate,
            "expected_batch_size": plan.sample_rate * num_units,
            "noise_multiplier": plan.noise_multiplier,
            "max_grad_norm": privacy.max_grad_norm,
            "steps": eng.steps,
            "planned_steps": plan.steps,
            "num_units": num_units,
            "max_examples_per_user": privacy.max_examples_per_user,
            "secure_mode": privacy.secure_mode,
            "history": [s.to_dict() for s in history],
        },
        "data": {
            "source_kind": "file" if config.data.path is not None else "synthetic",
            "max_length": config.data.max_length,
            "skip_invalid": config.data.skip_invalid,
            "missing_user_id": config.data.missing_user_id,
            "validation": _validation_kind(prepared, config, dp_validation),
        },
        "guard": {
            "enabled": config.guard.enabled,
            "applied": prepared.guard.applied,
            "strategy": config.guard.strategy,
            "sensitivity": config.guard.sensitivity,
            "note": prepared.guard.note,
            "entity_types": _guard_entity_types(config) if prepared.guard.applied else [],
        },
        "model": {
            "base": prepared.loaded.base,
            "method": prepared.loaded.method,
            "trainable_parameters": trainable,
            "total_parameters": total,
        },
        "training": config.training.model_dump(mode="json"),
        "metrics": {
            "epsilon": curve,
            "final": public_final,
            "final_data": final_data,
            "dp_validation": dp_validation,
        },
        "environment": {"python": platform.python_version()},
        "warnings": warnings_,
        "internal_diagnostics": (
            f"exact statistics of the private data are in the operator's {INTERNAL_FILE}, not "
            "here: they are not covered by ε"
        ),
    }


def _guard_entity_types(config: JobConfig) -> list[str]:
    """The entity types the guard looked for (the report lists the common ones it did not)."""
    from privacy_finetuner.guard import ENTITY_TYPES

    return list(config.guard.entities or ENTITY_TYPES)


def build_internal(
    *,
    eng: Any,
    prepared: PreparedData,
    config: JobConfig,
    state: Any,
    final: dict[str, Any],
) -> dict[str, Any]:
    """``internal_diagnostics.json``: exact statistics of the private data, NOT covered by ε.

    Invalid records appear as file line, error code and schema field name only (never a value).
    """
    stats = prepared.train_stats
    return {
        "kind": "internal",
        "covered_by_epsilon": False,
        "notice": (
            "Exact statistics of the private training and validation data. Not covered by the "
            "reported ε: never publish this file or the report.html section that shows it."
        ),
        "data": {
            "source": prepared.source,
            "traces": prepared.num_traces,
            "invalid_records": len(prepared.invalid),
            "invalid": [_invalid_entry(r) for r in prepared.invalid[:100]],
            "users": prepared.num_users,
            "traces_without_user_id": prepared.missing_user_ids,
            "train_examples": len(prepared.train),
            "validation_examples": len(prepared.validation),
            "truncated": stats.truncated,
            "dropped_no_targets": stats.dropped_no_targets,
            "train_tokens": stats.tokens,
            "target_tokens": stats.target_tokens,
            "canaries": len(prepared.canaries),
        },
        "guard": {"counts": prepared.guard.counts},
        "metrics": {
            "train_loss": state.train_loss,
            "validation_loss": [[s, _finite(v)] for s, v in state.validation_loss],
            "final": {k: _finite(v) for k, v in final.items()},
        },
        "timing": {
            "train_seconds": round(state.wall_seconds, 2),
            "steps_per_second": (
                round(eng.steps / state.wall_seconds, 3) if state.wall_seconds else None
            ),
        },
    }


def _validation_kind(
    prepared: PreparedData, config: JobConfig, dp_validation: dict[str, Any] | None
) -> str:
    """What the released report says about the validation set."""
    if not prepared.validation:
        return "none"
    if config.data.validation_public:
        return "public"
    return "private (DP estimate only)" if dp_validation else "private (not published)"


def _dp_estimate_applies(config: JobConfig, prepared: PreparedData) -> bool:
    """A DP estimate is made for a split of the private data only: a validation_path's users
    may be training users too (no parallel composition), and a public one is published exact."""
    return bool(prepared.validation) and config.data.validation_path is None


def _invalid_entry(record: Any) -> dict[str, Any]:
    """File line, error code and field name of a skipped record; its reason text is kept out
    (it is built by the loader and may, in older data modules, quote a value)."""
    return {
        "line": record.line,
        "code": getattr(record, "code", "invalid"),
        "field": getattr(record, "field", ""),
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
    dp_estimate: Callable[[float], Any] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Evaluate, save the model and tokenizer, and write the documents (report last).

    ``dp_estimate(ε)`` returns the DP validation estimate calibrated to ε (a
    :class:`~privacy_finetuner.training.dp_validation.DpEstimate`) or None; it is only asked
    when the held-out units are a split of the training data (see that module).

    Returns the report path and the exact final metrics (internal: for the operator's process,
    not for release).
    """
    from privacy_finetuner.modeling.loading import save_trained

    final = evaluate() if prepared.validation else {}
    estimate = None
    if dp_estimate is not None and _dp_estimate_applies(config, prepared):
        estimate = dp_estimate(epsilon)
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
        dp_validation=estimate.to_report() if estimate is not None else None,
    )
    internal = build_internal(eng=eng, prepared=prepared, config=config, state=state, final=final)
    path = write_documents(run, report, internal, html=config.output.report_html)
    return path, {k: _finite(v) for k, v in final.items()}
