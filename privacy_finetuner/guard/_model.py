"""Value objects of the context guard: entity types, findings, strategies and results.

A :class:`Finding` records *where* an identifier is and *what kind* it is, never the identifier
itself, so findings can be logged, counted and shown to people safely.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ENTITY_TYPES",
    "Finding",
    "ProtectedMessages",
    "ProtectedText",
    "Strategy",
]

#: Every entity type the built-in detectors emit, in report order.
ENTITY_TYPES: tuple[str, ...] = (
    "PERSON",
    "EMAIL",
    "PHONE",
    "CREDIT_CARD",
    "IBAN",
    "US_SSN",
    "UK_NINO",
    "NATIONAL_ID",
    "IP_ADDRESS",
    "STREET_ADDRESS",
    "DATE_OF_BIRTH",
    "URL_CREDENTIAL",
    "SECRET",
    "MEDICAL_RECORD_NUMBER",
)


class Strategy(str, enum.Enum):
    """How a found identifier is replaced.

    REDACT writes ``[EMAIL]``; MASK keeps the last four characters of numbers (``****1111``);
    HASH (entity hashing) writes a keyed HMAC-SHA256 pseudonym, the same for the same value
    across a data set; ENCRYPT writes a reversible AES-GCM token that :meth:`ContextGuard.reveal`
    opens with the key; K_ANONYMITY generalises quasi-identifiers (dates of birth to the year,
    IP addresses to their network, addresses to the street) and redacts direct identifiers.
    """

    REDACT = "redact"
    MASK = "mask"
    HASH = "hash"
    ENCRYPT = "encrypt"
    K_ANONYMITY = "k_anonymity"

    ENTITY_HASHING = "hash"  # noqa: PIE796 - documented alias of HASH


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected identifier: character offsets, type, confidence and the detector's name.

    The value itself is deliberately not stored: slice the text with ``text[f.start:f.end]``
    where you are allowed to see it.
    """

    start: int
    end: int
    type: str
    score: float
    detector: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"start", "end", "type", "score", "detector"}``."""
        return {
            "start": self.start,
            "end": self.end,
            "type": self.type,
            "score": round(self.score, 3),
            "detector": self.detector,
        }

    def shifted(self, offset: int) -> Finding:
        """The same finding moved by ``offset`` characters (for text split into parts)."""
        return Finding(self.start + offset, self.end + offset, self.type, self.score, self.detector)


@dataclass(frozen=True, slots=True)
class ProtectedText:
    """Result of :meth:`ContextGuard.protect`: the protected text and what was replaced.

    ``findings`` holds offsets into the *original* text.
    """

    text: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Number of replaced identifiers by entity type."""
        return count_findings(self.findings)


@dataclass(frozen=True, slots=True)
class ProtectedMessages:
    """Result of :meth:`ContextGuard.protect_messages`: messages in the same chat format."""

    messages: list[dict[str, Any]]
    counts: dict[str, int] = field(default_factory=dict)


def count_findings(findings: list[Finding]) -> dict[str, int]:
    """Counts by entity type, in no particular order."""
    counts: dict[str, int] = {}
    for finding in findings:
        counts[finding.type] = counts.get(finding.type, 0) + 1
    return counts


def merge_counts(into: dict[str, int], more: Mapping[str, int]) -> None:
    """Add ``more`` into ``into`` in place."""
    for key, value in more.items():
        into[key] = into.get(key, 0) + value
