"""Read a :class:`JobConfig` from YAML, apply overrides, and turn validation errors into one line.

The file named by the argument, else by ``PRIVACY_CONFIG``, else none (all defaults). Overrides
(from CLI flags or the HTTP service) are a dict, nested or with dotted keys
(``{"privacy.target_epsilon": 4}``); they win over the file. An error names the path inside the
file and, where known, its line: ``job.yaml:7: privacy.target_epsilon: must be > 0``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from privacy_finetuner.config.schema import JobConfig
from privacy_finetuner.errors import ConfigError, NotFoundError

__all__ = ["CONFIG_ENV_VAR", "dump_config", "load_config", "merge_overrides"]

CONFIG_ENV_VAR = "PRIVACY_CONFIG"


def _line_index(node: yaml.Node, prefix: tuple[str, ...], out: dict[tuple[str, ...], int]) -> None:
    """Map every key path of a composed YAML document to its 1-based line."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, str(key_node.value))
            out[path] = key_node.start_mark.line + 1
            _line_index(value_node, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = (*prefix, str(i))
            out[path] = item.start_mark.line + 1
            _line_index(item, path, out)


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    if not path.is_file():
        raise NotFoundError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{where}: {problem}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    lines: dict[tuple[str, ...], int] = {}
    if node is not None:
        _line_index(node, (), lines)
    return data, lines


def merge_overrides(base: dict[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``base`` with ``overrides`` applied; dotted keys address nested sections."""
    merged: dict[str, Any] = dict(base)
    for key, value in (overrides or {}).items():
        parts = key.split(".")
        target = merged
        for part in parts[:-1]:
            child = target.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            target[part] = child
            target = child
        leaf = parts[-1]
        if isinstance(value, Mapping) and isinstance(target.get(leaf), dict):
            target[leaf] = merge_overrides(target[leaf], value)
        else:
            target[leaf] = dict(value) if isinstance(value, Mapping) else value
    return merged


def _format_error(
    exc: ValidationError, source: str | None, lines: dict[tuple[str, ...], int]
) -> str:
    first = exc.errors()[0]
    loc = tuple(str(p) for p in first["loc"])
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    elif first["type"] in {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}:
        message = "must be " + message.removeprefix("Input should be ")
    else:
        message = message[0].lower() + message[1:] if message else message
    dotted = ".".join(loc) if loc else "(top level)"
    where = ""
    if source is not None:
        line = None
        for n in range(len(loc), 0, -1):
            line = lines.get(loc[:n])
            if line is not None:
                break
        where = f"{source}:{line}: " if line is not None else f"{source}: "
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{where}{dotted}: {message}{suffix}"


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None
) -> JobConfig:
    """Load and validate a job configuration.

    Args:
        path: YAML file; ``None`` uses ``$PRIVACY_CONFIG`` if set, else defaults only.
        overrides: values that win over the file, nested or with dotted keys.

    Raises:
        NotFoundError: the file does not exist.
        ConfigError: invalid YAML, an unknown key or a bad value; the message names its path.
    """
    if path is None:
        env = os.environ.get(CONFIG_ENV_VAR)
        path = Path(env) if env else None
    data: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    source: str | None = None
    if path is not None:
        source = str(path)
        data, lines = _read_yaml(Path(path))
    data = merge_overrides(data, overrides)
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source, lines)) from None


def dump_config(config: JobConfig) -> str:
    """The configuration as YAML (paths as strings), as stored in a run directory."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
