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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privacy_finetuner.accounting import DpSegment
from privacy_finetuner.config.planning import plan_privacy
from privacy_finetuner.errors import ConfigError

__all__ = ["JobPlan", "check_submitted_config", "deep_merge", "plan_job", "validate_job_config"]

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


def check_submitted_config(raw: dict[str, Any]) -> None:
    """Refuse the parts of a config that only the server may set.

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
        if isinstance(name, str) and name.startswith(("/", "~", ".", "\\")):
            raise ConfigError("model.name must be 'tiny' or a hub id, not a local path")


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
