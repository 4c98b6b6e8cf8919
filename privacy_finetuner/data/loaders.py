"""Read traces from JSONL files or local Hugging Face ``datasets`` directories.

Invalid records stop the load with an error naming ``file:line``, unless ``skip_invalid`` is set:
then they are skipped *and counted* (:attr:`LoadResult.invalid`), and the count reaches the
privacy report, so nothing is ever dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privacy_finetuner.data.formats import parse_record
from privacy_finetuner.data.records import RecordError, Trace
from privacy_finetuner.errors import (
    DataError,
    DataValidationError,
    MissingDependencyError,
    NotFoundError,
)

__all__ = ["InvalidRecord", "LoadResult", "load_traces", "write_traces"]


@dataclass(frozen=True)
class InvalidRecord:
    """A skipped record: where it was and why.

    ``reason`` is built only from ``code`` (a fixed identifier such as ``unknown_role``) and
    ``field`` (a schema path such as ``messages[1].role``): it never quotes a value, an unknown key
    or a role of the record, because it reaches the privacy report and the service API.
    """

    line: int
    reason: str
    code: str = "invalid"
    field: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form for reports (file:line, code and field names only)."""
        return {"line": self.line, "code": self.code, "field": self.field, "reason": self.reason}


def _invalid(exc: DataValidationError, line: int) -> InvalidRecord:
    """The skipped-record entry of ``exc``; only :class:`RecordError`'s parts are kept."""
    if isinstance(exc, RecordError):
        reason = f"{exc.code} ({exc.detail})"
        return InvalidRecord(
            line, f"{exc.field}: {reason}" if exc.field else reason, exc.code, exc.field
        )
    return InvalidRecord(line, "invalid record", "invalid", "")


@dataclass
class LoadResult:
    """Valid traces plus the records skipped under ``skip_invalid``."""

    path: str
    traces: list[Trace]
    invalid: list[InvalidRecord] = field(default_factory=list)

    @property
    def num_invalid(self) -> int:
        """How many records were skipped."""
        return len(self.invalid)


def _load_jsonl(path: Path, skip_invalid: bool) -> LoadResult:
    result = LoadResult(path=str(path), traces=[])
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        try:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    try:
                        raw = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise RecordError(
                            "malformed_json",
                            "",
                            f"{exc.msg} at column {exc.colno}",
                            path=str(path),
                            line=line_no,
                        ) from None
                    result.traces.append(parse_record(raw, path=str(path), line=line_no))
                except DataValidationError as exc:
                    if not skip_invalid:
                        raise
                    result.invalid.append(_invalid(exc, line_no))
        except UnicodeDecodeError:
            raise DataValidationError("not UTF-8 text", path=str(path)) from None
    return result


def _load_hf(path: Path, skip_invalid: bool) -> LoadResult:
    try:
        import datasets
    except ModuleNotFoundError:
        raise MissingDependencyError("Reading Hugging Face datasets", "datasets") from None
    try:
        ds: Any = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"cannot load a datasets directory from {path}: {exc}") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise DataError(f"{path}: a DatasetDict needs a 'train' split")
        ds = ds["train"]
    result = LoadResult(path=str(path), traces=[])
    for row_no, row in enumerate(ds, start=1):
        record = {k: v for k, v in dict(row).items() if v is not None}
        try:
            result.traces.append(
                parse_record(record, path=f"{path}[row]", line=row_no, hf_row=True)
            )
        except DataValidationError as exc:
            if not skip_invalid:
                raise
            result.invalid.append(_invalid(exc, row_no))
    return result


def load_traces(
    path: str | Path, *, skip_invalid: bool = False, format: str = "auto", allow_empty: bool = False
) -> LoadResult:
    """Load and validate every trace of a file.

    Args:
        path: a ``.jsonl`` file or a directory written by ``datasets.save_to_disk``.
        skip_invalid: skip and count invalid records instead of raising.
        format: "jsonl", "hf" or "auto" (a directory is "hf").
        allow_empty: accept a file without a valid trace.

    Raises:
        NotFoundError: ``path`` does not exist.
        DataValidationError: an invalid record (names ``file:line``) and ``skip_invalid`` is off.
        DataError: the file holds no valid trace, or cannot be read.
        MissingDependencyError: a datasets directory without the ``datasets`` package.
    """
    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"data file not found: {p}")
    fmt = format if format != "auto" else ("hf" if p.is_dir() else "jsonl")
    result = _load_hf(p, skip_invalid) if fmt == "hf" else _load_jsonl(p, skip_invalid)
    if not result.traces and not allow_empty:
        detail = f" ({result.num_invalid} invalid records skipped)" if result.invalid else ""
        raise DataError(f"{p}: the data set is empty{detail}")
    return result


def write_traces(traces: list[Trace], path: str | Path) -> None:
    """Write traces as JSONL (one record per line, UTF-8, keys in a stable order)."""
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as out:
        for trace in traces:
            out.write(json.dumps(trace.to_openai(), ensure_ascii=False) + "\n")
