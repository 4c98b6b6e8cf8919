"""Read a :class:`JobConfig` from YAML, apply overrides, and turn validation errors into one line.

The file named by the argument, else by ``PRIVACY_CONFIG``, else none (all defaults). Overrides
(from CLI flags or the HTTP service) are a dict, nested or with dotted keys
(``{"privacy.target_epsilon": 4}``); they win over the file. An error names the path inside the
file and, where known, its line: ``job.yaml:7: privacy.target_epsilon: must be > 0``; a bad value
that came from an override is named as such, never blamed on a line of the file.

Relative paths in the file (``data.path``, ``data.validation_path``, ``output.dir``, and a
``model.name`` that names an existing local directory) resolve against the file's directory, so a
job file works from any working directory; relative paths given as overrides resolve against the
working directory, as on any command line. Either way the loaded config holds absolute paths, so
the ``config.yaml`` a run saves is exactly the job that ran, wherever it is read back.
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

__all__ = ["CONFIG_ENV_VAR", "PATH_KEYS", "dump_config", "load_config", "merge_overrides"]

CONFIG_ENV_VAR = "PRIVACY_CONFIG"

#: Keys holding file-system paths, resolved to absolute paths at load time.
PATH_KEYS: tuple[tuple[str, str], ...] = (
    ("data", "path"),
    ("data", "validation_path"),
    ("output", "dir"),
)


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


def _key_paths(data: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """The leaf key paths of a nested mapping, to know which values an override set."""
    out: set[tuple[str, ...]] = set()
    for key, value in data.items():
        path = (*prefix, *str(key).split("."))
        if isinstance(value, Mapping) and value:
            out |= _key_paths(value, path)
        else:
            out.add(path)
    return out


def _absolute_paths(data: dict[str, Any], base: Path, *, model_dirs: bool) -> dict[str, Any]:
    """``data`` with its relative path values made absolute against ``base``."""
    out = dict(data)
    for section, key in PATH_KEYS:
        block = out.get(section)
        if isinstance(block, dict) and isinstance(block.get(key), str | os.PathLike):
            value = Path(block[key]).expanduser()
            if not value.is_absolute():
                out[section] = {**block, key: str((base / value).resolve())}
    model = out.get("model")
    if model_dirs and isinstance(model, dict) and isinstance(model.get("name"), str):
        name = Path(model["name"]).expanduser()
        # A hub id ("org/model") looks like a relative path too: only a directory that exists
        # next to the file, or a name written as ./ or ../, is taken as a path.
        local = str(model["name"]).startswith((".", "~")) or (base / name).is_dir()
        if not name.is_absolute() and local:
            out["model"] = {**model, "name": str((base / name).resolve())}
    return out


def _format_error(
    exc: ValidationError,
    source: str | None,
    lines: dict[tuple[str, ...], int],
    overridden: set[tuple[str, ...]] = frozenset(),  # type: ignore[assignment]
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
    if any(loc[:n] in overridden for n in range(len(loc), 0, -1)):
        # The value came from a flag or an override: the file's lines are not to blame.
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        return f"{dotted}: {message} (value given as a flag or override){suffix}"
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
        data = _absolute_paths(data, Path(path).resolve().parent, model_dirs=True)
    nested = merge_overrides({}, overrides)
    data = merge_overrides(data, _absolute_paths(nested, Path.cwd(), model_dirs=False))
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source, lines, _key_paths(nested))) from None


def dump_config(config: JobConfig) -> str:
    """The configuration as YAML (paths as strings), as stored in a run directory."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
