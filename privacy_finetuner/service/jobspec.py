"""A submitted job config: validated as the CLI validates it, then planned into DP segments.

The plan (σ, q, steps) is what the ledger reserves at submission. It comes from
``privacy_finetuner.config.planning.plan_privacy``, the same torch-free planner the trainer uses:
q = batch size / units, steps = ``max_steps`` or ⌈epochs / q⌉ (truncated to what a target ε
affords), σ = the fixed noise multiplier or the one calibrated to the target ε. The number of units is the data set's
registered ``num_units`` (or, for the built-in synthetic data, the size of its training split).
Whatever the plan, the trainer charges the steps it actually takes, each before taking it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privacy_finetuner.accounting import DpSegment
from privacy_finetuner.config.planning import plan_privacy
from privacy_finetuner.errors import ConfigError

__all__ = [
    "DEFAULT_BOUNDS",
    "JobPlan",
    "ServerPolicy",
    "apply_policy",
    "check_bounds",
    "check_submitted_config",
    "deep_merge",
    "load_server_policy",
    "plan_job",
    "validate_job_config",
]

#: A hub id: ``owner/name``, each part starting with a letter or digit, no ``..``; nothing else
#: (no local paths, no URLs) may come from a tenant.
HUB_ID = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*/[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*$"
)

#: Upper bounds on what a tenant may ask for: each is a dotted config key and its largest value.
#: They keep admission (ε of the plan) and the worker (model size, memory) bounded.
DEFAULT_BOUNDS: dict[str, float] = {
    "training.max_steps": 100_000,
    "training.epochs": 1_000,
    "training.batch_size": 65_536,
    "training.eval_batches": 1_000,
    "training.eval_tool_calls": 10_000,
    "training.checkpoint_every": 100_000,
    "training.warmup_steps": 100_000,
    "privacy.noise_multiplier": 1_000.0,
    "privacy.max_physical_batch_size": 4_096,
    "privacy.max_grad_norm": 1e6,
    "model.tiny.hidden_size": 4_096,
    "model.tiny.intermediate_size": 16_384,
    "model.tiny.num_layers": 64,
    "model.tiny.vocab_size": 65_536,
    "model.tiny.tokenizer_corpus_size": 100_000,
    "model.lora.r": 256,
    "data.max_length": 8_192,
    "data.synthetic.n": 200_000,
    "data.synthetic.canaries": 10_000,
    "data.synthetic.canary_repeats": 1_000,
    "audit.canaries": 10_000,
    "audit.repeats": 100,
}

#: Settings the operator locks by default (after the tenant's merge): secure noise and sampling,
#: the context guard on, no remote code.
DEFAULT_LOCKED: dict[str, Any] = {
    "privacy.secure_mode": True,
    "guard.enabled": True,
    "model.trust_remote_code": False,
    # No held-out split of private data: exact metrics on private users are not covered by ε,
    # and the unit count the ledger plans from must be the one the trainer draws from.
    "data.validation_split": 0.0,
}


@dataclass(frozen=True)
class ServerPolicy:
    """The operator's policy: locked keys (dotted → value) and bounds (dotted → maximum)."""

    locked: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_LOCKED))
    bounds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_BOUNDS))


def load_server_policy(base: dict[str, Any], *, allow_insecure: bool = False) -> ServerPolicy:
    """Pop the ``server_policy`` section (``locked``, ``bounds``) from the base config.

    ``PF_ALLOW_INSECURE_JOBS`` unlocks ``privacy.secure_mode`` (test deployments only).
    """
    raw = base.pop("server_policy", None) or {}
    if not isinstance(raw, dict):
        raise ConfigError("PRIVACY_CONFIG server_policy must be a mapping")
    locked = dict(DEFAULT_LOCKED)
    locked.update(raw.get("locked") or {})
    if allow_insecure:
        locked.pop("privacy.secure_mode", None)
    bounds = dict(DEFAULT_BOUNDS)
    bounds.update({str(k): float(v) for k, v in (raw.get("bounds") or {}).items()})
    return ServerPolicy(locked=locked, bounds=bounds)


def _get(tree: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def apply_policy(
    raw: dict[str, Any], merged: dict[str, Any], policy: ServerPolicy
) -> dict[str, Any]:
    """``merged`` with the locked keys forced; a tenant who set one to another value is refused.

    Raises:
        ConfigError: names the locked key (never the value sent).
    """
    out = deep_merge(merged, {})
    for dotted, value in policy.locked.items():
        present, given = _get(raw, dotted)
        if present and given != value:
            raise ConfigError(f"{dotted} is locked by the operator's policy")
        _set(out, dotted, value)
    return out


def check_bounds(config: Any, policy: ServerPolicy) -> None:
    """Refuse values above the operator's bounds, naming the key (not the value)."""
    tree = config.model_dump(mode="python")
    for dotted, limit in policy.bounds.items():
        present, value = _get(tree, dotted)
        if present and isinstance(value, (int, float)) and value > limit:
            raise ConfigError(f"{dotted} is above the operator's bound {limit:g}")


#: Settings a tenant may not choose over HTTP: where data is read from (the data set's registered
#: ``data_path`` is used), where outputs go (``<runs dir>/<job id>``), and remote code execution.
_SERVER_ONLY = (("data", "path"), ("data", "validation_path"), ("output", "dir"))


@dataclass(frozen=True)
class JobPlan:
    """The DP segments a job is expected to take, plus the parameters the ledger records."""

    segments: list[DpSegment]
    clip_norm: float
    delta: float
    privacy_unit: str


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` onto ``base``, recursing into nested dicts."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_base_config(path: Path | None) -> dict[str, Any]:
    """The server's PRIVACY_CONFIG file as a dict (empty when unset)."""
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"PRIVACY_CONFIG {path}: cannot be read as YAML") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"PRIVACY_CONFIG {path}: must be a mapping")
    return data


def check_submitted_config(raw: dict[str, Any], *, allowed_models: list[str] | None = None) -> None:
    """Refuse the parts of a config that only the server may set.

    ``model.name`` must be on the operator's allow-list (default: ``tiny`` only) and be
    ``tiny`` or a strict hub id: never a local path (``runs/../../../etc`` opened any readable
    directory, other tenants' run directories included).

    Raises:
        ConfigError: names the offending key (never its value).
    """
    for section, key in _SERVER_ONLY:
        part = raw.get(section)
        if isinstance(part, dict) and part.get(key) is not None:
            raise ConfigError(f"{section}.{key} cannot be set through the API")
    model = raw.get("model")
    if isinstance(model, dict):
        if model.get("trust_remote_code"):
            raise ConfigError("model.trust_remote_code cannot be enabled through the API")
        name = model.get("name")
        if name is not None:
            allowed = allowed_models if allowed_models is not None else ["tiny"]
            if not isinstance(name, str) or not (name == "tiny" or HUB_ID.match(name)):
                raise ConfigError("model.name must be 'tiny' or a hub id (owner/name)")
            if name not in allowed:
                raise ConfigError("model.name is not on the operator's list of allowed models")


def validate_job_config(raw: dict[str, Any], *, base: dict[str, Any] | None = None) -> Any:
    """The ``JobConfig`` for ``raw`` merged onto ``base``.

    Raises:
        pydantic.ValidationError: the config does not validate (unknown keys, bad values).
    """
    from privacy_finetuner.config import JobConfig

    return JobConfig.model_validate(deep_merge(base or {}, raw))


def plan_job(config: Any, *, num_units: int | None = None) -> JobPlan:
    """The planned DP segments of ``config`` (see module docstring).

    Args:
        config: a validated ``JobConfig``.
        num_units: privacy units (examples or users) in the registered data set, if known.
    """
    privacy = config.privacy
    n = num_units
    if n is None and config.data.path is None:
        if config.data.validation_split == 0 and privacy.privacy_unit == "example":
            n = config.data.synthetic.n  # exactly what the trainer draws from
        else:  # an estimate: the trainer's check refuses the job if it is not exact
            n = max(1, math.floor(config.data.synthetic.n * (1 - config.data.validation_split)))
    if n is None:
        raise ConfigError("the data set must be registered with num_units to plan this job")
    plan = plan_privacy(config, num_units=n)
    segments = [
        DpSegment(
            noise_multiplier=float(plan.noise_multiplier),
            sample_rate=float(plan.sample_rate),
            steps=int(plan.steps),
        )
    ]
    return JobPlan(
        segments=segments,
        clip_norm=float(privacy.max_grad_norm),
        delta=float(privacy.delta),
        privacy_unit=str(privacy.privacy_unit),
    )
