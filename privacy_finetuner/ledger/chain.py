"""The hash chain: each entry's hash covers its content and the hash of the entry before it.

``hash = sha256(prev_hash ‖ canonical JSON of (data set, seq, kind, job, payload, time))``. Editing
any field of any entry, deleting or reordering entries breaks the chain; deleting the tail is caught
by the head hash and count kept on the data set row (and quoted in every audit report).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

__all__ = ["GENESIS_HASH", "canonical_json", "entry_hash", "format_time"]

#: prev_hash of the first entry of every data set's chain.
GENESIS_HASH = "0" * 64


def canonical_json(data: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, floats as Python's shortest repr."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def format_time(value: dt.datetime) -> str:
    """UTC ISO-8601 with microseconds; naive values (SQLite) are taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(
    *,
    prev_hash: str,
    dataset_id: str,
    seq: int,
    kind: str,
    job_id: str | None,
    payload: dict[str, Any],
    created_at: dt.datetime,
) -> str:
    """The sha256 hex digest chaining one entry to ``prev_hash``."""
    body = canonical_json(
        {
            "dataset_id": dataset_id,
            "seq": seq,
            "kind": kind,
            "job_id": job_id,
            "payload": payload,
            "created_at": format_time(created_at),
        }
    )
    return hashlib.sha256((prev_hash + "\n" + body).encode("utf-8")).hexdigest()
