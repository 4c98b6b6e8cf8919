"""One detection rule: a compiled pattern, its scorer and the cheap gates that skip it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from privacy_finetuner.guard._model import Finding

__all__ = ["Rule", "Scorer", "context_before"]

Scorer = Callable[[re.Match[str], str], "tuple[int, int, float] | None"]


@dataclass(frozen=True)
class Rule:
    """One regex rule: entity type, detector name, pattern, scorer and a cheap pre-filter."""

    entity: str
    name: str
    pattern: re.Pattern[str]
    scorer: Scorer
    needs: tuple[str, ...] = ()  # skip unless the lower-cased text has one ("digit": any digit)
    anchor: re.Pattern[str] | None = None  # run ``pattern.match`` only where this hits
    gate: tuple[str, ...] = ()  # skip unless the lower-cased text contains one of these
    anchor_gate: re.Pattern[str] | None = None  # skip unless this matches somewhere

    def findings(self, text: str, lower: str | None = None) -> Iterator[Finding]:
        """Scored findings of this rule in ``text`` (``lower`` is ``text.lower()`` if known)."""
        if self.gate and not any(word in (lower or text.lower()) for word in self.gate):
            return
        if self.anchor_gate is not None and self.anchor_gate.search(text) is None:
            return
        if self.anchor is None:
            matches: Iterator[re.Match[str] | None] = self.pattern.finditer(text)
        else:
            source = lower if lower is not None and len(lower) == len(text) else text.lower()
            matches = (
                self.pattern.match(text, hit.start()) for hit in self.anchor.finditer(source)
            )
        for match in matches:
            if match is None:
                continue
            result = self.scorer(match, text)
            if result is not None:
                yield Finding(result[0], result[1], self.entity, result[2], self.name)


def context_before(text: str, start: int, width: int = 48) -> str:
    """Lower-cased text in the ``width`` characters before ``start`` (for cue words)."""
    return text[max(0, start - width) : start].lower()
