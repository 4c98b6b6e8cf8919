"""Detectors: the pluggable interface and the built-in offline detector.

A detector is anything with a ``name`` and a ``detect(text) -> Iterable[Finding]`` method (see
:class:`Detector`). :class:`BuiltinDetector` runs the regex + validator rules of every structured
type, the name and address grammars and a key-aware pass over ``key: value`` / ``"key": "value"``
pairs; :func:`resolve` keeps the best non-overlapping findings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from privacy_finetuner.errors import ConfigError
from privacy_finetuner.guard._keys_map import KEYED_TEXT_TYPES, entity_for_key
from privacy_finetuner.guard._model import ENTITY_TYPES, Finding
from privacy_finetuner.guard._names import CAP, address_findings, name_findings
from privacy_finetuner.guard._patterns import MRN_PATTERN, RULES, Rule, _medical

__all__ = ["BuiltinDetector", "Detector", "resolve"]

_HAS_DIGIT = re.compile(r"\d")
#: ``"name": "Jane Doe"``, ``name='Jane Doe'``, ``address = "12 Main St"`` in logs and JSON text.
_KEYED_VALUE = re.compile(
    r"[\"']?([A-Za-z][\w\-]{1,40})[\"']?[ \t]*[:=][ \t]*(?:\"([^\"\n]{1,200})\"|'([^'\n]{1,200})')"
)
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
                rules.append(Rule("MEDICAL_RECORD_NUMBER", "mrn.custom", compiled, _medical))
        self._rules = tuple(rules)
        _ = MRN_PATTERN  # the default pattern is part of RULES

    def detect(self, text: str) -> list[Finding]:
        """Every candidate finding of the enabled entity types (overlaps not yet resolved)."""
        found: list[Finding] = []
        has_digit = _HAS_DIGIT.search(text) is not None
        for rule in self._rules:
            if rule.needs and not any(
                has_digit if need == "digit" else need in text for need in rule.needs
            ):
                continue
            found.extend(rule.findings(text))
        if "PERSON" in self.entities:
            found.extend(name_findings(text))
        if "STREET_ADDRESS" in self.entities:
            found.extend(address_findings(text))
        if ":" in text or "=" in text:
            found.extend(f for f in _keyed_findings(text) if f.type in self.entities)
        return found


def _has_group(pattern: str) -> bool:
    return re.compile(pattern).groups > 0


def _keyed_findings(text: str) -> Iterable[Finding]:
    """Values whose key names the entity type (``"name": "…"``, ``address='…'``)."""
    for match in _KEYED_VALUE.finditer(text):
        entity = entity_for_key(match.group(1))
        if entity is None or entity not in KEYED_TEXT_TYPES:
            continue
        group = 2 if match.group(2) is not None else 3
        if match.start(group) == match.end(group):
            continue
        yield Finding(match.start(group), match.end(group), entity, 0.8, "keyed.value")
    for match in _KEYED_BARE.finditer(text):
        entity = entity_for_key(match.group(1))
        if entity is not None:
            yield Finding(match.start(2), match.end(2), entity, 0.7, "keyed.line")


def resolve(findings: Iterable[Finding], threshold: float) -> list[Finding]:
    """Best non-overlapping findings at or above ``threshold``, sorted by position.

    Higher score wins; at equal score the longer span wins. A finding that overlaps an accepted
    one is dropped, except that a lower-scored finding extending beyond it is merged so that no
    character flagged by both is left uncovered.
    """
    ranked = sorted(
        (f for f in findings if f.score >= threshold and f.end > f.start),
        key=lambda f: (-f.score, -(f.end - f.start), f.start),
    )
    accepted: list[Finding] = []
    for finding in ranked:
        if all(finding.end <= other.start or finding.start >= other.end for other in accepted):
            accepted.append(finding)
    accepted.sort(key=lambda f: f.start)
    return accepted
