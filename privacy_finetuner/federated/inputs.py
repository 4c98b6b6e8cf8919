"""What a node reads: the job from Flower's run config, its own traces from its node config.

In a real deployment the job travels inside the Flower app (``[tool.flwr.app.config] job``, YAML
text), so the server and every client parse the same configuration; each SuperNode names its own
traces with ``--node-config 'data-path="..."'``. Traces never leave the node: they are validated,
passed through the context guard and tokenised where they live.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from privacy_finetuner.config.loader import dump_config
from privacy_finetuner.config.schema import JobConfig
from privacy_finetuner.data.tokenize import EncodedExample, encode_traces
from privacy_finetuner.errors import ConfigError, DataError

__all__ = ["JOB_KEY", "job_from_text", "job_to_text", "load_local_examples"]

#: Key of the job YAML in Flower's run config.
JOB_KEY = "job"


def job_to_text(config: JobConfig) -> str:
    """The complete job as YAML, for ``[tool.flwr.app.config] job``."""
    return dump_config(config)


def job_from_text(text: Any, source: str = f"run config '{JOB_KEY}'") -> JobConfig:
    """Parse and validate a job given as YAML text.

    Raises:
        ConfigError: missing, not YAML, or not a valid job; the message names the key.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{source} is missing: put the job YAML there")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"{source}: {where}: {first['msg']}") from None


def load_local_examples(config: JobConfig, path: Path, tokenizer: Any) -> list[EncodedExample]:
    """This node's traces: validated, guarded (``config.guard``) and tokenised.

    Raises:
        NotFoundError, DataValidationError, DataError: bad or empty data.
    """
    from privacy_finetuner.data.loaders import load_traces
    from privacy_finetuner.training.prepare import apply_guard

    loaded = load_traces(path, skip_invalid=config.data.skip_invalid, format=config.data.format)
    traces, _ = apply_guard(loaded.traces, config.guard)
    examples, _ = encode_traces(traces, tokenizer, max_length=config.data.max_length)
    if not examples:
        raise DataError(f"{path}: no trace has an assistant token left after truncation")
    return examples
