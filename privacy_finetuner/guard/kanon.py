"""K-anonymity for structured records by full-domain generalisation of quasi-identifiers.

Every quasi-identifier (QI) column climbs its own generalisation ladder — numbers to ever wider
ranges, digit strings such as postcodes lose trailing digits, ISO dates become month, year,
decade, other strings are suppressed to ``"*"`` — one level at a time, always on the column with
the most distinct values, until every QI combination occurs at least ``k`` times. Records in
classes still smaller than ``k`` may instead be dropped while they are at most
``max_suppression`` of the data.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from privacy_finetuner.errors import InvalidParameterError

__all__ = ["KAnonymityResult", "generalise", "k_anonymize"]

_WIDTHS = (1, 5, 10, 20, 50, 100, 1000)
_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})(?:-(\d{2}))?")
_DIGITS = re.compile(r"^[0-9A-Za-z]+$")


@dataclass(frozen=True)
class KAnonymityResult:
    """Generalised records (suppressed ones removed), the level per QI and how many were dropped."""

    records: list[dict[str, Any]]
    levels: dict[str, int]
    suppressed: int


def generalise(value: Any, level: int) -> Any:
    """``value`` at generalisation ``level`` (0 = unchanged; high enough = ``"*"``)."""
    if level <= 0:
        return value
    if value is None:
        return "*"
    if isinstance(value, bool):
        return "*"
    if isinstance(value, int | float):
        if level >= len(_WIDTHS):
            return "*"
        width = _WIDTHS[level]
        low = int(value // width * width)
        return f"{low}-{low + width - 1}"
    text = str(value)
    date = _ISO_DATE.match(text)
    if date:
        year = date.group(1)
        return {1: f"{year}-{date.group(2)}", 2: year, 3: f"{year[:3]}0s"}.get(level, "*")
    if _DIGITS.match(text) and len(text) > 1:
        if level >= len(text):
            return "*"
        return text[: len(text) - level] + "*" * level
    return "*"


def _max_level(values: Sequence[Any]) -> int:
    """Smallest level at which every value of the column is ``"*"``."""
    top = 1
    for value in values:
        level = 1
        while generalise(value, level) != "*" and level < 64:
            level += 1
        top = max(top, level)
    return top


def k_anonymize(
    records: Sequence[Mapping[str, Any]],
    quasi_identifiers: Sequence[str],
    *,
    k: int,
    max_suppression: float = 0.0,
) -> KAnonymityResult:
    """Generalise ``quasi_identifiers`` until each combination occurs at least ``k`` times.

    Args:
        records: rows as mappings; columns other than the QIs pass through unchanged.
        quasi_identifiers: the QI column names (age, postcode, birth date, gender, …).
        k: minimum size of every equivalence class (k ≥ 1).
        max_suppression: fraction of records (0–1) that may be dropped instead of generalising.

    Raises:
        InvalidParameterError: ``k < 1``, ``max_suppression`` outside [0, 1], or fewer than ``k``
            records in total (no generalisation can help).
    """
    if k < 1:
        raise InvalidParameterError(f"k must be at least 1, got {k}")
    if not 0.0 <= max_suppression <= 1.0:
        raise InvalidParameterError(f"max_suppression must be in [0, 1], got {max_suppression}")
    rows = [dict(record) for record in records]
    if rows and len(rows) < k:
        raise InvalidParameterError(f"{len(rows)} records cannot be {k}-anonymous")
    levels = dict.fromkeys(quasi_identifiers, 0)
    tops = {qi: _max_level([row.get(qi) for row in rows]) for qi in quasi_identifiers}
    allowed = int(max_suppression * len(rows))
    while True:
        keys = [
            tuple(generalise(row.get(qi), levels[qi]) for qi in quasi_identifiers) for row in rows
        ]
        sizes = Counter(keys)
        small = sum(size for size in sizes.values() if size < k)
        exhausted = all(levels[qi] >= tops[qi] for qi in quasi_identifiers)
        if small == 0 or small <= allowed or exhausted:
            break
        candidates = [qi for qi in quasi_identifiers if levels[qi] < tops[qi]]
        distinct = {
            qi: len({key[quasi_identifiers.index(qi)] for key in keys}) for qi in candidates
        }
        levels[max(candidates, key=lambda qi: distinct[qi])] += 1
    out: list[dict[str, Any]] = []
    for row, key in zip(rows, keys, strict=True):
        if sizes[key] >= k:
            out.append({**row, **dict(zip(quasi_identifiers, key, strict=True))})
    return KAnonymityResult(out, levels, len(rows) - len(out))
