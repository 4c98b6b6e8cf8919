"""Optional NER backends for names and addresses: spaCy, Presidio or GLiNER, when installed.

The built-in detector needs no model. Users who have an NER model can add it as one more
:class:`~privacy_finetuner.guard.detectors.Detector`::

    guard = ContextGuard(detectors=[SpacyDetector("en_core_web_sm")])

Nothing here is imported by the guard itself; each class imports its library on construction and
raises :class:`~privacy_finetuner.errors.MissingDependencyError` with the pip command when it is
missing. No model is downloaded: the model must already be installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from privacy_finetuner.errors import MissingDependencyError
from privacy_finetuner.guard._model import Finding

__all__ = ["GlinerDetector", "PresidioDetector", "SpacyDetector"]

#: NER labels of common models mapped to guard entity types.
DEFAULT_LABELS: Mapping[str, str] = {
    "PERSON": "PERSON",
    "PER": "PERSON",
    "person": "PERSON",
    "LOCATION": "STREET_ADDRESS",
    "address": "STREET_ADDRESS",
    "street address": "STREET_ADDRESS",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "US_SSN",
    "UK_NINO": "UK_NINO",
    "IP_ADDRESS": "IP_ADDRESS",
}


def _require(module: str, extra: str, feature: str) -> Any:
    try:
        return __import__(module)
    except ImportError as exc:
        raise MissingDependencyError(feature, extra) from exc


class _MappedDetector:
    name = "ner"

    def __init__(self, labels: Mapping[str, str] | None, score: float) -> None:
        self.labels = dict(DEFAULT_LABELS if labels is None else labels)
        self.score = score

    def _emit(self, spans: Iterable[tuple[int, int, str, float]]) -> list[Finding]:
        out = []
        for start, end, label, score in spans:
            entity = self.labels.get(label)
            if entity is not None and end > start:
                out.append(Finding(start, end, entity, score, self.name))
        return out


class SpacyDetector(_MappedDetector):
    """spaCy NER (``PERSON`` by default); ``model`` is an installed pipeline name or object."""

    name = "ner.spacy"

    def __init__(
        self, model: str | Any = "en_core_web_sm", *, labels: Mapping[str, str] | None = None,
        score: float = 0.7,
    ) -> None:  # fmt: skip
        super().__init__(labels if labels is not None else {"PERSON": "PERSON"}, score)
        spacy = _require("spacy", "ner", "SpacyDetector")
        self._nlp: Callable[[str], Any] = spacy.load(model) if isinstance(model, str) else model

    def detect(self, text: str) -> list[Finding]:
        doc = self._nlp(text)
        return self._emit((e.start_char, e.end_char, e.label_, self.score) for e in doc.ents)


class PresidioDetector(_MappedDetector):
    """Presidio's ``AnalyzerEngine`` (pass one you configured, or the default English engine)."""

    name = "ner.presidio"

    def __init__(
        self, engine: Any | None = None, *, labels: Mapping[str, str] | None = None,
        language: str = "en",
    ) -> None:  # fmt: skip
        super().__init__(labels, 0.0)
        if engine is None:
            analyzer = _require("presidio_analyzer", "ner", "PresidioDetector")
            engine = analyzer.AnalyzerEngine()
        self._engine = engine
        self._language = language

    def detect(self, text: str) -> list[Finding]:
        results = self._engine.analyze(text=text, language=self._language)
        return self._emit((r.start, r.end, r.entity_type, float(r.score)) for r in results)


class GlinerDetector(_MappedDetector):
    """GLiNER zero-shot NER with the given (installed) model and entity labels."""

    name = "ner.gliner"

    def __init__(
        self, model: str | Any, *, labels: Mapping[str, str] | None = None,
        threshold: float = 0.5,
    ) -> None:  # fmt: skip
        super().__init__(
            labels if labels is not None else {"person": "PERSON", "address": "STREET_ADDRESS"}, 0.0
        )
        if isinstance(model, str):
            gliner = _require("gliner", "ner", "GlinerDetector")
            model = gliner.GLiNER.from_pretrained(model, local_files_only=True)
        self._model = model
        self._threshold = threshold

    def detect(self, text: str) -> list[Finding]:
        found = self._model.predict_entities(text, list(self.labels), threshold=self._threshold)
        return self._emit((e["start"], e["end"], e["label"], float(e["score"])) for e in found)
