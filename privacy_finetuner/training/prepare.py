"""Everything before the first DP step: data, guard, split, tokenizer and model, encoding, σ.

All of it runs *before* the run directory is created, so bad input (a missing file, an invalid
record, an empty data set, an unreachable ε) fails with one message and leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import itertools
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privacy_finetuner.config.schema import GuardConfig, JobConfig
from privacy_finetuner.data.loaders import InvalidRecord, load_traces
from privacy_finetuner.data.records import Trace, parse_trace
from privacy_finetuner.data.synth import Canary, generate_traces
from privacy_finetuner.data.tokenize import (
    EncodedExample,
    EncodingStats,
    ToolCallPrompt,
    encode_traces,
    tool_call_prompts,
)
from privacy_finetuner.errors import DataError, PrivacyWarning
from privacy_finetuner.modeling.loading import LoadedModel, load_base_model

__all__ = ["GuardOutcome", "PreparedData", "apply_guard", "prepare_data"]


@dataclass
class GuardOutcome:
    """What the context guard did: redaction counts by entity type, or why it did not run."""

    applied: bool
    counts: dict[str, int] = field(default_factory=dict)
    note: str | None = None


@dataclass
class PreparedData:
    """Validated, guarded, split and encoded data plus the base model."""

    loaded: LoadedModel
    train: list[EncodedExample]
    validation: list[EncodedExample]
    prompts: list[ToolCallPrompt]
    train_stats: EncodingStats
    num_traces: int
    invalid: list[InvalidRecord]
    guard: GuardOutcome
    source: str
    canaries: list[Canary] = field(default_factory=list)
    audit_plan: Any = None  # privacy_finetuner.audit.CanaryPlan when the audit is enabled
    missing_user_ids: int = 0  # traces read without a user_id (internal diagnostics only)

    @property
    def num_users(self) -> int:
        """Distinct users among the training examples (an example without a user is its own)."""
        return len({e.user_id or f"__{i}" for i, e in enumerate(self.train)})

    def num_units(self, privacy_unit: str) -> int:
        """N, the number of privacy units sampling draws from."""
        return self.num_users if privacy_unit == "user" else len(self.train)


def apply_guard(traces: list[Trace], config: GuardConfig) -> tuple[list[Trace], GuardOutcome]:
    """Run the context guard over every message before anything is tokenised."""
    if not config.enabled:
        return traces, GuardOutcome(applied=False, note="disabled in the configuration")
    try:
        from privacy_finetuner.guard import ContextGuard
    except ImportError:
        warnings.warn(
            "the context guard is not available; training on unredacted text (DP still applies)",
            PrivacyWarning,
            stacklevel=2,
        )
        return traces, GuardOutcome(applied=False, note="guard not installed")
    guard = ContextGuard(
        strategies=[config.strategy], entities=config.entities, sensitivity=config.sensitivity
    )
    counts: dict[str, int] = {}
    protected: list[Trace] = []
    for trace in traces:
        result = guard.protect_messages([m.to_openai() for m in trace.messages])
        for kind, n in result.counts.items():
            counts[kind] = counts.get(kind, 0) + int(n)
        record = {**trace.to_openai(), "messages": list(result.messages)}
        protected.append(parse_trace(record))
    return protected, GuardOutcome(applied=True, counts=dict(sorted(counts.items())))


def _trace_location(
    data_path: Path | None, fmt: str, invalid: list[InvalidRecord], index: int
) -> str:
    """``file:line`` of the ``index``-th valid trace of the file (the loader keeps valid
    non-blank lines in order), or a description of the synthetic trace."""
    if data_path is None:
        return f"synthetic trace #{index + 1}"
    skipped = {r.line for r in invalid}
    if fmt == "hf" or data_path.is_dir():
        rows = (n for n in range(1, 2**62) if n not in skipped)
        return f"{data_path}[row {next(itertools.islice(rows, index, None))}]"
    with data_path.open(encoding="utf-8") as handle:
        lines = (n for n, text in enumerate(handle, start=1) if text.strip() and n not in skipped)
        found = next(itertools.islice(lines, index, None), None)
    return f"{data_path}:{found}" if found is not None else str(data_path)


def check_user_ids(
    traces: list[Trace],
    config: JobConfig,
    *,
    invalid: list[InvalidRecord],
) -> int:
    """Count traces without a ``user_id``; a user-level run refuses them unless the config says
    ``data.missing_user_id: own_user`` (then each is its own user, and the report says so).

    Raises:
        DataError: user-level, policy "refuse", and some trace has no user id (count and the
            first file:line, never a value).
    """
    missing = [i for i, t in enumerate(traces) if t.user_id is None]
    if (
        missing
        and config.privacy.privacy_unit == "user"
        and config.data.missing_user_id == "refuse"
    ):
        where = _trace_location(config.data.path, config.data.format, invalid, missing[0])
        raise DataError(
            f"privacy_unit is 'user' but {len(missing)} of {len(traces)} traces have no user_id "
            f"(first at {where}); a trace without one would silently become its own user. Add "
            "user ids, or set data.missing_user_id: own_user to treat each such trace as its own "
            "user (the report then states it)"
        )
    return len(missing)


def _split(traces: list[Trace], fraction: float, seed: int) -> tuple[list[Trace], list[Trace]]:
    """Hold out whole users (hash of user id and seed), so no user is in both sets."""
    if fraction <= 0:
        return traces, []
    train: list[Trace] = []
    val: list[Trace] = []
    for i, t in enumerate(traces):
        key = f"{seed}:{t.user_id or f'__trace_{i}'}".encode()
        bucket = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
        (val if bucket < fraction else train).append(t)
    if not train:
        raise DataError("the validation split left no training data; lower validation_split")
    return train, val


def prepare_data(config: JobConfig, *, tokenizer_dir: Path | None = None) -> PreparedData:
    """Load (or synthesise), validate, guard, split and encode the data; load the base model.

    Raises:
        NotFoundError, DataValidationError, DataError: bad or empty data.
        ModelError: the base model cannot be loaded.
    """
    data = config.data
    canaries: list[Canary] = []
    invalid: list[InvalidRecord] = []
    if data.path is None:
        synth = data.synthetic
        result = generate_traces(
            synth.n,
            seed=synth.seed,
            canaries=synth.canaries,
            canary_repeats=synth.canary_repeats,
            domains=synth.domains,
        )
        traces, canaries, source = result.traces, result.canaries, f"synthetic(n={synth.n})"
    else:
        loaded_file = load_traces(data.path, skip_invalid=data.skip_invalid, format=data.format)
        traces, invalid, source = loaded_file.traces, loaded_file.invalid, str(data.path)
    num_traces = len(traces)
    missing_user_ids = check_user_ids(traces, config, invalid=invalid)
    traces, guard = apply_guard(traces, config.guard)
    if data.validation_path is not None:
        val_traces = load_traces(data.validation_path, skip_invalid=data.skip_invalid).traces
        val_traces, _ = apply_guard(val_traces, config.guard)
        train_traces = traces
    else:
        train_traces, val_traces = _split(traces, data.validation_split, config.training.seed)
    audit_plan = None
    if config.audit.enabled:  # after the split, so no audit canary is held out for validation
        from privacy_finetuner.data.audit_canaries import add_audit_canaries

        train_traces, audit_plan = add_audit_canaries(
            train_traces,
            canaries=config.audit.canaries,
            repeats=config.audit.repeats,
            seed=config.audit.seed,
        )
    loaded = load_base_model(
        config.model,
        max_length=data.max_length,
        seed=config.training.seed,
        tokenizer_dir=tokenizer_dir,
    )
    tok = loaded.tokenizer
    fmt = data.tool_call_format
    train, stats = encode_traces(
        train_traces, tok, max_length=data.max_length, tool_call_format=fmt
    )
    if not train:
        raise DataError("no training example has an assistant token left after truncation")
    validation, _ = encode_traces(val_traces, tok, max_length=data.max_length, tool_call_format=fmt)
    prompts = tool_call_prompts(
        val_traces[: config.training.eval_tool_calls], tok, tool_call_format=fmt
    )
    return PreparedData(
        loaded,
        train,
        validation,
        prompts,
        stats,
        num_traces,
        invalid,
        guard,
        source,
        canaries,
        audit_plan,
        missing_user_ids,
    )
