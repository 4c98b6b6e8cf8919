"""Key-aware protection of chat messages and JSON tool-call arguments (OpenAI chat format)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from privacy_finetuner.guard._keys_map import entity_for_key
from privacy_finetuner.guard._model import Finding, ProtectedText

__all__ = ["MessageProtector"]

_DIGITS_ONLY = re.compile(r"^\+?[\d\s().\-]+$")
_NAME_LIKE = re.compile(r"^[^\d@<>{}\[\]|=]{2,80}$")
#: Keyed values the key alone identifies; PERSON additionally needs a name-like value.
_KEY_IS_EVIDENCE = frozenset(
    {"EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "UK_NINO", "NATIONAL_ID", "PERSON",
     "STREET_ADDRESS", "DATE_OF_BIRTH", "IP_ADDRESS", "SECRET", "MEDICAL_RECORD_NUMBER"}
)  # fmt: skip


class MessageProtector:
    """Walks messages and JSON, protecting free text and keyed values.

    Args:
        protect_text: the guard's text protection (``text -> ProtectedText``).
        replace: replacement of one keyed value (``(finding, value) -> str``).
        entities: entity types the guard reports.
        record: called with the findings of every protected piece (for the counts).
    """

    def __init__(
        self,
        protect_text: Callable[[str], ProtectedText],
        replace: Callable[[Finding, str], str],
        entities: frozenset[str],
        record: Callable[[list[Finding]], None],
    ) -> None:
        self._protect_text = protect_text
        self._replace = replace
        self._entities = entities
        self._record = record

    def text(self, value: str) -> str:
        result = self._protect_text(value)
        self._record(result.findings)
        return result.text

    def message(self, message: dict[str, Any]) -> dict[str, Any]:
        """A protected copy of one chat message; unknown fields pass through unchanged."""
        out = dict(message)
        content = message.get("content")
        role = message.get("role")
        if isinstance(content, str):
            if role in ("tool", "function") and content.lstrip()[:1] in ("{", "["):
                out["content"] = self.json_string(content)
            else:
                out["content"] = self.text(content)
        elif isinstance(content, list):
            out["content"] = [self._part(part) for part in content]
        if isinstance(message.get("tool_calls"), list):
            out["tool_calls"] = [self._tool_call(call) for call in message["tool_calls"]]
        if isinstance(message.get("function_call"), dict):
            out["function_call"] = self._function(message["function_call"])
        return out

    def _part(self, part: Any) -> Any:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            return {**part, "text": self.text(part["text"])}
        return part

    def _tool_call(self, call: Any) -> Any:
        if isinstance(call, dict) and isinstance(call.get("function"), dict):
            return {**call, "function": self._function(call["function"])}
        return call

    def _function(self, function: dict[str, Any]) -> dict[str, Any]:
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            return {**function, "arguments": self.json_string(arguments)}
        if isinstance(arguments, dict | list):
            return {**function, "arguments": self.value(arguments)}
        return function

    def json_string(self, text: str) -> str:
        """Protect inside a JSON document kept as a string; non-JSON falls back to text."""
        try:
            data = json.loads(text)
        except ValueError:
            return self.text(text)
        # keep the document's own escaping, so protect + reveal gives the input back byte for byte
        return json.dumps(self.value(data), ensure_ascii="\\u" in text)

    def value(self, data: Any, key: str | None = None) -> Any:
        """Protected copy of a JSON value; ``key`` is the key it sits under, if any."""
        if isinstance(data, dict):
            return {k: self.value(v, str(k)) for k, v in data.items()}
        if isinstance(data, list):
            return [self.value(item, key) for item in data]
        entity = self._entity(key)
        if isinstance(data, str):
            if entity is not None and self._keyed_ok(entity, data):
                return self._keyed(entity, data)
            return self.text(data)
        if isinstance(data, int | float) and not isinstance(data, bool):
            if entity is not None and entity not in ("DATE_OF_BIRTH", "PERSON"):
                return self._keyed(entity, str(data))
            if isinstance(data, int) and abs(data) >= 1_000_000:
                protected = self.text(str(data))
                return data if protected == str(data) else protected
        return data

    def _entity(self, key: str | None) -> str | None:
        if key is None:
            return None
        entity = entity_for_key(key)
        if entity is None and key.endswith("s"):
            entity = entity_for_key(key[:-1])
        return entity if entity in self._entities and entity in _KEY_IS_EVIDENCE else None

    @staticmethod
    def _keyed_ok(entity: str, value: str) -> bool:
        value = value.strip()
        if not value or (value.startswith("[") and value.endswith("]")):
            return False
        if entity == "PERSON":
            return bool(_NAME_LIKE.match(value)) and len(value.split()) <= 6
        if entity == "PHONE":
            return bool(_DIGITS_ONLY.match(value))
        return len(value) <= 500

    def _keyed(self, entity: str, value: str) -> str:
        finding = Finding(0, len(value), entity, 0.9, "keyed.json")
        self._record([finding])
        return self._replace(finding, value)
