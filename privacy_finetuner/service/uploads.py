"""Tenant uploads: a streamed JSONL (or gzip) file, validated record by record while it arrives.

The file is written to ``<storage root>/<tenant digest>/<data set id>/traces.jsonl`` (0600, via a
temporary file renamed into place only once every line validated), so a tenant's data lives in
its own folder and no tenant ever names a server path. Each line is parsed with the project's
trace schema (:func:`privacy_finetuner.data.records.parse_trace`); the first invalid line stops
the upload with its line number, an error code and the schema field (never a value). The guard's
detectors count PII findings per type on ingestion; the counts are stored with the data set.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from privacy_finetuner.errors import DataValidationError, PrivacyFinetunerError

__all__ = ["UploadError", "UploadTooLarge", "UploadStats", "receive_upload", "tenant_dir"]


class UploadError(PrivacyFinetunerError):
    """An invalid upload: ``line``, ``code`` and ``field`` say where and what (no values)."""

    def __init__(self, message: str, *, line: int | None, code: str, field: str = "") -> None:
        super().__init__(message)
        self.line, self.code, self.field = line, code, field


class UploadTooLarge(PrivacyFinetunerError):
    """The upload passed the size limit (compressed or decompressed)."""


@dataclass
class UploadStats:
    """What the upload held (stored with the data set; shown to its own tenant only)."""

    traces: int = 0
    users: int = 0
    traces_without_user: int = 0
    bytes: int = 0
    pii: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


def tenant_dir(storage_root: Path, tenant: str) -> Path:
    """The tenant's own folder (a digest: tenant names never become path components)."""
    return storage_root / hashlib.sha256(tenant.encode("utf-8")).hexdigest()[:24]


class _Lines:
    def __init__(self, limit: int, gzipped: bool) -> None:
        self.limit = limit
        self.inflate = zlib.decompressobj(wbits=31) if gzipped else None
        self.buffer = b""
        self.size = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        if self.inflate is not None:
            chunk = self.inflate.decompress(chunk, self.limit + 1 - self.size)
            if self.inflate.unconsumed_tail:
                raise UploadTooLarge("upload larger than the limit once decompressed")
        self.size += len(chunk)
        if self.size > self.limit:
            raise UploadTooLarge("upload larger than the limit")
        data = self.buffer + chunk
        *lines, self.buffer = data.split(b"\n")
        return lines

    def close(self) -> list[bytes]:
        rest = self.buffer
        self.buffer = b""
        return [rest] if rest.strip() else []


def _feed(lines: _Lines, chunk: bytes, take: Any) -> None:
    for raw in lines.feed(chunk):
        take(raw)


async def receive_upload(
    chunks: AsyncIterator[bytes],
    target: Path,
    *,
    limit: int,
    scan: Any = None,
) -> UploadStats:
    """Stream ``chunks`` into ``target`` (validated, PII-counted); returns the counts.

    Args:
        chunks: the request body.
        target: final file; written as ``target.tmp`` then renamed.
        limit: most bytes, compressed and decompressed.
        scan: ``find(text) -> findings with .type`` (the guard), or None to skip PII counts.

    Raises:
        UploadError, UploadTooLarge: nothing is kept.
    """
    from privacy_finetuner.data.records import RecordError, parse_trace

    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = target.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    stats = UploadStats()
    users: set[str] = set()
    pii: Counter[str] = Counter()
    lines: _Lines | None = None
    number = 0
    received = 0

    def take(raw: bytes) -> None:
        nonlocal number
        number += 1
        if not raw.strip():
            return
        try:
            record = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise UploadError(
                f"line {number}: not valid JSON", line=number, code="invalid_json"
            ) from None
        try:
            trace = parse_trace(record, path="upload", line=number)
        except RecordError as exc:
            raise UploadError(
                f"line {number}: invalid trace ({exc.code} at {exc.field or 'record'})",
                line=number,
                code=exc.code,
                field=exc.field,
            ) from None
        except DataValidationError:
            raise UploadError(
                f"line {number}: invalid trace", line=number, code="invalid_trace"
            ) from None
        stats.traces += 1
        if trace.user_id is None:
            stats.traces_without_user += 1
        else:
            users.add(trace.user_id)
        if scan is not None:
            for message in trace.messages:
                if message.content:
                    pii.update(f.type for f in scan(message.content))
        os.write(fd, raw.rstrip(b"\r") + b"\n")

    try:
        async for chunk in chunks:
            if not chunk:
                continue
            received += len(chunk)
            if received > limit:
                raise UploadTooLarge("upload larger than the limit")
            if lines is None:
                lines = _Lines(limit, gzipped=chunk[:2] == b"\x1f\x8b")
            # parsing and scanning run in a worker thread: the event loop keeps serving
            await anyio.to_thread.run_sync(_feed, lines, chunk, take)
        if lines is not None:
            for raw in lines.close():
                take(raw)
        if stats.traces == 0:
            raise UploadError("the upload holds no trace", line=None, code="empty")
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, target)
    stats.users = len(users)
    stats.bytes = received
    stats.pii = dict(sorted(pii.items()))
    return stats
