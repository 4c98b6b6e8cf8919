"""Detectors: the pluggable interface and the built-in offline detector.

A detector is anything with a ``name`` and a ``detect(text) -> Iterable[Finding]`` method (see
:class:`Detector`). :class:`BuiltinDetector` runs the regex + validator rules of every structured
type, the name and address grammars and a key-aware pass over ``key: value`` / ``"key": "value"``
pairs; :func:`resolve` keeps the best non-overlapping findings.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from privacy_finetuner.errors import ConfigError
from privacy_finetuner.guard._keys_map import KEYED_TEXT_TYPES, entity_for_key
from privacy_finetuner.guard._model import ENTITY_TYPES, Finding
from privacy_finetuner.guard._names import (
    CAP,
    address_block,
    name_findings,
    numbered_address_findings,
    unnumbered_address_findings,
)
from privacy_finetuner.guard._patterns import RULES, Rule, _medical

__all__ = ["BuiltinDetector", "Detector", "resolve"]

#: ``"name": "Jane Doe"``, ``name='Jane Doe'``, ``address = "12 Main St"`` in logs and JSON text.
_KEYED_VALUE = re.compile(r"[:=][ \t]*(?:\"([^\"\n]{1,200})\"|'([^'\n]{1,200})')")
_PERSON_VALUE = re.compile(r"[^\W\d_][^\d_@/\\<>{}|=]{1,80}$")
_KEY_BEFORE = re.compile(r"([A-Za-z][\w\-]{1,40})[\"']?[ \t]*\Z")
_HAS_KEY_LINE = re.compile(r"(?:name|patient|customer|address|street|dob|birth)[ \t]*:")
_KEYED_BARE = re.compile(
    rf"(?im)^[ \t]*(name|full name|patient|patient name|customer|address|street|dob|"
    rf"date of birth)[ \t]*:[ \t]*({CAP}[^\n]{{0,80}})$"
)


@runtime_checkable
class Detector(Protocol):
    """Anything that finds identifiers in text.

    Implementations return offsets into ``text`` and must not keep or log the values. An NER
    backend (spaCy, Presidio, GLiNER) plugs in here; see :mod:`privacy_finetuner.guard.ner`.
    """

    name: str

    def detect(self, text: str) -> Iterable[Finding]:
        """All candidate findings, overlapping allowed; the guard resolves overlaps."""
        ...


class BuiltinDetector:
    """The offline detector: regex + checksum rules, name/address grammars and keyed values.

    Args:
        entities: entity types to report (default: all of :data:`ENTITY_TYPES`).
        mrn_patterns: extra regular expressions for medical record numbers; group 1 (or the
            whole match) is the number.
    """

    name = "builtin"

    def __init__(
        self, entities: Sequence[str] | None = None, mrn_patterns: Sequence[str] = ()
    ) -> None:
        wanted = frozenset(entities) if entities is not None else frozenset(ENTITY_TYPES)
        unknown = wanted - frozenset(ENTITY_TYPES)
        if unknown:
            raise ConfigError(
                f"unknown entity type(s) {sorted(unknown)}; known: {', '.join(ENTITY_TYPES)}"
            )
        self.entities = wanted
        rules = [rule for rule in RULES if rule.entity in wanted]
        if "MEDICAL_RECORD_NUMBER" in wanted:
            for index, pattern in enumerate(mrn_patterns):
                try:
                    compiled = re.compile(pattern if _has_group(pattern) else f"({pattern})")
                except re.error as exc:
                    raise ConfigError(f"invalid MRN pattern #{index}: {exc}") from exc
                rules.append(
                    Rule(
                        "MEDICAL_RECORD_NUMBER", "mrn.custom", compiled, _medical, needs=("digit",)
                    )
                )
        self._digit_rules = tuple(rule for rule in rules if "digit" in rule.needs)
        self._text_rules = tuple(rule for rule in rules if "digit" not in rule.needs)

    def detect(self, text: str) -> list[Finding]:
        """Every candidate finding of the enabled entity types (overlaps not yet resolved).

        Rules that need a digit (cards, IBANs, ids, phones, dates, house numbers) only run on
        windows of ±64 characters around digit runs, which keeps prose cheap.
        """
        found: list[Finding] = []
        lower = text.lower()
        if len(lower) != len(text):  # a few characters change length when lower-cased
            lower = text
        for rule in self._text_rules:
            if not rule.needs or any(need in lower for need in rule.needs):
                found.extend(rule.findings(text, lower))
        if "PERSON" in self.entities:
            found.extend(name_findings(text))
        if "STREET_ADDRESS" in self.entities:
            found.extend(unnumbered_address_findings(text))
        if ":" in text or "=" in text:
            found.extend(f for f in _keyed_findings(text, lower) if f.type in self.entities)
        windows = _digit_windows(text)
        if not windows:
            return found
        start_count = len(found)
        # a rule whose cue words are nowhere in the text cannot fire in any window
        digit_rules = [
            rule
            for rule in self._digit_rules
            if not rule.gate or any(word in lower for word in rule.gate)
        ]
        for start, end in windows:
            window, window_lower = text[start:end], lower[start:end]
            for rule in digit_rules:
                for finding in rule.findings(window, window_lower):
                    found.append(finding.shifted(start))
            if "STREET_ADDRESS" in self.entities:
                found.extend(f.shifted(start) for f in numbered_address_findings(window))
        # The address lines around a numbered street, as a second candidate: if the wider span
        # runs into a stronger finding (a phone on the next line) the street alone still counts.
        for index in range(start_count, len(found)):
            if found[index].type == "STREET_ADDRESS" and found[index].score >= 0.6:
                wider = address_block(text, found[index])
                if wider is not found[index]:
                    found.append(wider)
        return found


_DIGITS = re.compile(r"\d")
_MARGIN = 64
#: Digits closer than two margins to each other form one cluster (one window).
_CLUSTER = re.compile(r"\d(?:\D{0,128}\d)*")


def _digit_windows(text: str) -> list[tuple[int, int]]:
    """``[start, end)`` windows reaching 64 characters beyond each digit cluster, cut at spaces."""
    if len(text) <= 4 * _MARGIN:
        return [(0, len(text))] if _DIGITS.search(text) else []
    out = []
    size = len(text)
    for match in _CLUSTER.finditer(text):
        start, end = max(0, match.start() - _MARGIN), min(size, match.end() + _MARGIN)
        if start > 0:
            space = text.rfind(" ", max(0, start - 24), start)
            start = space + 1 if space >= 0 else start
        if end < size:
            space = text.find(" ", end, end + 24)
            end = space if space >= 0 else end
        out.append((start, end))
    return out


def _has_group(pattern: str) -> bool:
    return re.compile(pattern).groups > 0


def _keyed_findings(text: str, lower: str) -> Iterable[Finding]:
    """Values whose key names the entity type (``"name": "…"``, ``address='…'``)."""
    for match in _KEYED_VALUE.finditer(text):
        key = _KEY_BEFORE.search(text, max(0, match.start() - 44), match.start())
        if key is None:
            continue
        entity = entity_for_key(key.group(1))
        if entity is None or entity not in KEYED_TEXT_TYPES:
            continue
        group = 1 if match.group(1) is not None else 2
        if match.start(group) == match.end(group):
            continue
        if entity == "PERSON" and not _PERSON_VALUE.match(match.group(group)):
            continue
        yield Finding(match.start(group), match.end(group), entity, 0.8, "keyed.value")
    for match in _KEYED_BARE.finditer(text) if _HAS_KEY_LINE.search(lower) else ():
        entity = entity_for_key(match.group(1))
        if entity is not None:
            yield Finding(match.start(2), match.end(2), entity, 0.7, "keyed.line")


def resolve(findings: Iterable[Finding], threshold: float) -> list[Finding]:
    """Best non-overlapping findings at or above ``threshold``, sorted by position.

    Higher score wins; at equal score the longer span wins. A finding that overlaps an accepted
    one is dropped.
    """
    ranked = sorted(
        (f for f in findings if f.score >= threshold and f.end > f.start),
        key=lambda f: (-f.score, -(f.end - f.start), f.start),
    )
    starts: list[int] = []  # accepted spans, kept sorted by start (they never overlap)
    accepted: list[Finding] = []
    for finding in ranked:
        index = bisect.bisect_left(starts, finding.start)
        if index > 0 and accepted[index - 1].end > finding.start:
            continue
        if index < len(starts) and starts[index] < finding.end:
            continue
        starts.insert(index, finding.start)
        accepted.insert(index, finding)
    return accepted
