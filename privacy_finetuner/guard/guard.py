"""The :class:`ContextGuard` façade: find, protect, explain and reveal identifiers."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from privacy_finetuner.errors import ConfigError, GuardError
from privacy_finetuner.guard._messages import MessageProtector
from privacy_finetuner.guard._model import (
    ENTITY_TYPES,
    Finding,
    ProtectedMessages,
    ProtectedText,
    count_findings,
    merge_counts,
)
from privacy_finetuner.guard.detectors import BuiltinDetector, Detector, resolve
from privacy_finetuner.guard.kanon import KAnonymityResult, k_anonymize
from privacy_finetuner.guard.keys import DEFAULT_KEY_ENV, KeyRing
from privacy_finetuner.guard.strategies import Replacer, StrategySpec

__all__ = ["SENSITIVITY_THRESHOLDS", "ContextGuard"]

#: Minimum detector confidence that gets replaced, per sensitivity.
SENSITIVITY_THRESHOLDS: dict[str, float] = {"high": 0.5, "medium": 0.65, "low": 0.8}


class ContextGuard:
    """Finds personal data and secrets in text, chat messages and tool calls, and replaces them.

    Args:
        strategies: how to replace: ``["redact"]`` (default), ``"mask"``, ``"hash"`` (keyed
            HMAC-SHA256 pseudonyms), ``"encrypt"`` (AES-GCM, reversible with the key),
            ``"k_anonymity"``, a callable ``(finding, value) -> str``, a list mixing one default
            with ``"TYPE=strategy"`` items, or a mapping ``{"EMAIL": "hash", "*": "redact"}``.
        entities: entity types to look for (default: all of :data:`ENTITY_TYPES`).
        sensitivity: ``"high"`` (most recall), ``"medium"`` or ``"low"`` (fewest false positives).
        detectors: extra detectors (an NER backend, your own rules) run after the built-in one.
        key_env: environment variable holding the key ring (HASH and ENCRYPT).
        key_file: key file used when ``key_env`` is unset.
        keyring: an explicit :class:`KeyRing` (wins over ``key_env`` and ``key_file``).
        mrn_patterns: extra regular expressions for medical record numbers.
        allow: values that are never replaced (a support address, a company name), compared
            case-insensitively.
    """

    def __init__(
        self,
        strategies: StrategySpec = ("redact",),
        entities: Sequence[str] | None = None,
        sensitivity: str = "high",
        *,
        detectors: Sequence[Detector] = (),
        key_env: str = DEFAULT_KEY_ENV,
        key_file: str | os.PathLike[str] | None = None,
        keyring: KeyRing | None = None,
        mrn_patterns: Sequence[str] = (),
        allow: Iterable[str] = (),
    ) -> None:
        if sensitivity not in SENSITIVITY_THRESHOLDS:
            raise ConfigError(
                f"sensitivity must be one of {', '.join(SENSITIVITY_THRESHOLDS)}, got {sensitivity!r}"
            )
        self.sensitivity = sensitivity
        self.threshold = SENSITIVITY_THRESHOLDS[sensitivity]
        self._builtin = BuiltinDetector(entities, mrn_patterns=mrn_patterns)
        self.entities: frozenset[str] = self._builtin.entities
        for detector in detectors:
            if not isinstance(detector, Detector):
                raise ConfigError(f"{detector!r} is not a detector (needs name and detect())")
        self._detectors: tuple[Detector, ...] = (self._builtin, *detectors)
        self._key_env = key_env
        self._key_file = key_file
        self._replacer = Replacer(strategies, keyring if keyring is not None else self._load_keys)
        self._allow = frozenset(value.casefold() for value in allow)
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ContextGuard(entities={len(self.entities)}, sensitivity={self.sensitivity!r})"

    def _load_keys(self) -> KeyRing | None:
        ring = KeyRing.from_env(self._key_env)
        if ring is None and self._key_file is not None:
            ring = KeyRing.from_file(self._key_file)
        return ring

    # -- detection ----------------------------------------------------------------------------
    def find(self, text: str) -> list[Finding]:
        """Non-overlapping findings in ``text``, sorted by position (nothing is replaced)."""
        if not isinstance(text, str):
            raise GuardError(f"expected text (str), got {type(text).__name__}")
        candidates: list[Finding] = []
        for detector in self._detectors:
            candidates.extend(f for f in detector.detect(text) if f.type in self.entities)
        findings = resolve(candidates, self.threshold)
        if self._allow:
            findings = [f for f in findings if text[f.start : f.end].casefold() not in self._allow]
        return findings

    def explain(self, text: str) -> list[dict[str, Any]]:
        """What was found, where, by which detector and how sure: never the value itself."""
        return [
            {
                "type": f.type,
                "start": f.start,
                "end": f.end,
                "length": f.end - f.start,
                "detector": f.detector,
                "confidence": round(f.score, 3),
            }
            for f in self.find(text)
        ]

    # -- protection ---------------------------------------------------------------------------
    def protect(self, text: str) -> ProtectedText:
        """``text`` with every finding replaced by its strategy; counts are accumulated."""
        result = self._protect(text)
        self._record(result.findings)
        return result

    def _protect(self, text: str) -> ProtectedText:
        findings = self.find(text)
        if not findings:
            return ProtectedText(text, [])
        pieces: list[str] = []
        position = 0
        for finding in findings:
            pieces.append(text[position : finding.start])
            pieces.append(self._replacer.replacement(finding, text[finding.start : finding.end]))
            position = finding.end
        pieces.append(text[position:])
        return ProtectedText("".join(pieces), findings)

    def protect_batch(self, texts: Iterable[str]) -> list[ProtectedText]:
        """:meth:`protect` for each text, in order."""
        return [self.protect(text) for text in texts]

    def protect_messages(self, messages: Sequence[Mapping[str, Any]]) -> ProtectedMessages:
        """Protect chat messages (OpenAI format) including JSON tool-call arguments.

        Message ``content`` (a string or a list of text parts), ``tool_calls[].function.arguments``
        (a JSON string or object) and JSON ``tool`` results are protected; inside JSON, values
        under keys such as ``email``, ``card_number``, ``name``, ``phone``, ``address``, ``ssn``,
        ``iban`` or ``dob`` are replaced whole, other strings are scanned as text.
        """
        found: list[Finding] = []
        walker = MessageProtector(
            self._protect, self._replacer.replacement, self.entities, found.extend
        )
        out = []
        for message in messages:
            if not isinstance(message, Mapping):
                raise GuardError(f"a message must be a mapping, got {type(message).__name__}")
            out.append(walker.message(dict(message)))
        self._record(found)
        return ProtectedMessages(out, count_findings(found))

    def protect_json(self, data: Any) -> Any:
        """A protected copy of a JSON-like value (dicts, lists, strings), keys taken into account."""
        found: list[Finding] = []
        walker = MessageProtector(
            self._protect, self._replacer.replacement, self.entities, found.extend
        )
        result = walker.value(data)
        self._record(found)
        return result

    # -- encryption ---------------------------------------------------------------------------
    def reveal(self, text: str) -> str:
        """Decrypt every ENCRYPT token in ``text`` (needs the key ring that encrypted it)."""
        return self._replacer.reveal(text)

    def reencrypt(self, text: str) -> str:
        """Re-encrypt every ENCRYPT token under the active key (after a key rotation)."""
        return self._replacer.reencrypt(text)

    # -- structured records -------------------------------------------------------------------
    @staticmethod
    def k_anonymize(
        records: Sequence[Mapping[str, Any]],
        quasi_identifiers: Sequence[str],
        *,
        k: int,
        max_suppression: float = 0.0,
    ) -> KAnonymityResult:
        """Generalise quasi-identifiers until each combination occurs ≥ k times (see kanon)."""
        return k_anonymize(records, quasi_identifiers, k=k, max_suppression=max_suppression)

    # -- counts -------------------------------------------------------------------------------
    def _record(self, findings: list[Finding]) -> None:
        if findings:
            with self._lock:
                merge_counts(self._counts, count_findings(findings))

    @property
    def counts(self) -> dict[str, int]:
        """Cumulative replacements by entity type across calls (for the privacy report)."""
        with self._lock:
            return {t: self._counts[t] for t in ENTITY_TYPES if t in self._counts} | {
                t: n for t, n in self._counts.items() if t not in ENTITY_TYPES
            }

    def reset_counts(self) -> None:
        """Start counting from zero."""
        with self._lock:
            self._counts.clear()
