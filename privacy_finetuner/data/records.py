"""Agent traces in the OpenAI chat format, and their validation.

One trace (one JSONL line) is::

    {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": "..."}, ...],
     "user_id": "u-17", "session_id": "s-3", "tools": [...]}

An assistant message may carry ``tool_calls``: ``[{"id": "call_1", "type": "function",
"function": {"name": "lookup_order", "arguments": "{\\"order_id\\": \\"A1\\"}"}}]`` with the
arguments a JSON *string* (as the OpenAI API returns them); a tool message answers one call with
``tool_call_id``. Validation checks all of this and names the file, line and message index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from privacy_finetuner.errors import DataValidationError

__all__ = ["ROLES", "Message", "RecordError", "ToolCall", "Trace", "parse_trace"]

ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class ToolCall:
    """One function call made by the assistant; ``arguments`` is the parsed JSON object."""

    id: str
    name: str
    arguments: dict[str, Any]

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI wire form (arguments as a JSON string)."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments)},
        }


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI wire form, as written to JSONL."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out

    def to_template(self) -> dict[str, Any]:
        """The form chat templates expect: tool-call arguments as a dict, not a string."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out


@dataclass(frozen=True)
class Trace:
    """One conversation: the unit of an example; ``user_id`` groups traces into a privacy unit."""

    messages: tuple[Message, ...]
    user_id: str | None = None
    session_id: str | None = None
    tools: tuple[dict[str, Any], ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def to_openai(self) -> dict[str, Any]:
        """The JSONL record."""
        out: dict[str, Any] = {"messages": [m.to_openai() for m in self.messages]}
        if self.user_id is not None:
            out["user_id"] = self.user_id
        if self.session_id is not None:
            out["session_id"] = self.session_id
        if self.tools:
            out["tools"] = list(self.tools)
        if self.meta:
            out["meta"] = self.meta
        return out

    def with_messages(self, messages: tuple[Message, ...]) -> Trace:
        """A copy with other messages (after the guard rewrote their text)."""
        return Trace(messages, self.user_id, self.session_id, self.tools, self.meta)


_TRACE_KEYS = {"messages", "user_id", "session_id", "tools", "meta", "id", "metadata"}
_MESSAGE_KEYS = {"role", "content", "tool_calls", "tool_call_id", "name"}


class RecordError(DataValidationError):
    """An invalid record: ``code`` (a fixed identifier) and ``field`` (a schema path such as
    ``messages[2].tool_call_id``) say what is wrong, and the message is built from them alone.

    Nothing from the record's *values* is ever quoted (not a role, not an unknown key, not an
    id): these messages reach the privacy report, the service API and logs, and a value of an
    invalid record is as private as a valid one.
    """

    def __init__(
        self, code: str, field: str, detail: str, *, path: str | None, line: int | None
    ) -> None:
        super().__init__(
            f"{field}: {code} ({detail})" if field else f"{code} ({detail})", path=path, line=line
        )
        self.code = code
        self.field = field
        self.detail = detail


class _Where:
    def __init__(self, path: str | None, line: int | None) -> None:
        self.path, self.line = path, line

    def error(self, code: str, field: str, detail: str) -> RecordError:
        return RecordError(code, field, detail, path=self.path, line=self.line)


def _opt_str(value: Any, what: str, where: _Where) -> str | None:
    if value is None:
        return None
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    raise where.error("wrong_type", what, f"must be a string, got {type(value).__name__}")


def _content(raw: Any, i: int, where: _Where) -> str:
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    at = f"messages[{i}].content"
    if isinstance(raw, list):  # OpenAI content parts: keep the text parts
        texts: list[str] = []
        for part in raw:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise where.error("unsupported_content", at, "only text parts are supported")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise where.error("wrong_type", at, f"must be a string, got {type(raw).__name__}")


def _tool_call(raw: Any, i: int, j: int, where: _Where) -> ToolCall:
    at = f"messages[{i}].tool_calls[{j}]"
    if not isinstance(raw, dict):
        raise where.error("wrong_type", at, "must be an object")
    function = raw.get("function")
    if not isinstance(function, dict):
        raise where.error(
            "wrong_type", f"{at}.function", "must be an object with name and arguments"
        )
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise where.error("missing_field", f"{at}.function.name", "must be a non-empty string")
    arguments = function.get("arguments", "{}")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise where.error(
                "invalid_json", f"{at}.function.arguments", f"{exc.msg} at char {exc.pos}"
            ) from None
    if not isinstance(arguments, dict):
        raise where.error("wrong_type", f"{at}.function.arguments", "must be a JSON object")
    call_id = raw.get("id")
    if call_id is not None and not isinstance(call_id, str):
        raise where.error("wrong_type", f"{at}.id", "must be a string")
    return ToolCall(id=call_id or f"call_{i}_{j}", name=name, arguments=arguments)


def _message(raw: Any, i: int, where: _Where) -> Message:
    at = f"messages[{i}]"
    if not isinstance(raw, dict):
        raise where.error("wrong_type", at, "must be an object")
    unknown = set(raw) - _MESSAGE_KEYS
    if unknown:
        allowed = ", ".join(sorted(_MESSAGE_KEYS))
        raise where.error("unknown_key", at, f"{len(unknown)} key(s) not among {allowed}")
    role = raw.get("role")
    if role not in ROLES:
        raise where.error("unknown_role", f"{at}.role", f"expected one of {', '.join(ROLES)}")
    content = _content(raw.get("content"), i, where)
    calls_raw = raw.get("tool_calls") or []
    if calls_raw and role != "assistant":
        raise where.error(
            "unexpected_field", f"{at}.tool_calls", "only assistant messages may have tool_calls"
        )
    if not isinstance(calls_raw, list):
        raise where.error("wrong_type", f"{at}.tool_calls", "must be a list")
    calls = tuple(_tool_call(c, i, j, where) for j, c in enumerate(calls_raw))
    tool_call_id = _opt_str(raw.get("tool_call_id"), f"{at}.tool_call_id", where)
    if role == "tool" and tool_call_id is None:
        raise where.error(
            "missing_field", f"{at}.tool_call_id", "a tool message needs tool_call_id"
        )
    if role == "assistant" and not content and not calls:
        raise where.error("empty_message", at, "an assistant message needs content or tool_calls")
    name = _opt_str(raw.get("name"), f"{at}.name", where)
    return Message(role, content, calls, tool_call_id, name)


def parse_trace(raw: Any, *, path: str | None = None, line: int | None = None) -> Trace:
    """Validate one decoded JSON record and return it as a :class:`Trace`.

    Raises:
        DataValidationError: the record breaks the schema; the message names ``path:line``.
    """
    where = _Where(path, line)
    if not isinstance(raw, dict):
        raise where.error(
            "wrong_type", "", f"a trace must be a JSON object, got {type(raw).__name__}"
        )
    unknown = set(raw) - _TRACE_KEYS
    if unknown:
        allowed = ", ".join(sorted(_TRACE_KEYS))
        raise where.error("unknown_key", "", f"{len(unknown)} key(s) not among {allowed}")
    messages_raw = raw.get("messages")
    if not isinstance(messages_raw, list) or not messages_raw:
        raise where.error("missing_field", "messages", "must be a non-empty list")
    messages = tuple(_message(m, i, where) for i, m in enumerate(messages_raw))
    if not any(m.role == "assistant" for m in messages):
        raise where.error("no_assistant", "messages", "no assistant message (nothing to learn)")
    open_calls: set[str] = set()
    for i, m in enumerate(messages):
        open_calls.update(c.id for c in m.tool_calls)
        if m.role == "tool" and m.tool_call_id not in open_calls:
            raise where.error(
                "unmatched_tool_call_id",
                f"messages[{i}].tool_call_id",
                "answers no earlier tool call",
            )
    tools = raw.get("tools") or []
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise where.error("wrong_type", "tools", "must be a list of objects")
    meta = raw.get("meta") or raw.get("metadata") or {}
    if not isinstance(meta, dict):
        raise where.error("wrong_type", "meta", "must be an object")
    return Trace(
        messages=messages,
        user_id=_opt_str(raw.get("user_id"), "user_id", where),
        session_id=_opt_str(raw.get("session_id"), "session_id", where),
        tools=tuple(tools),
        meta=meta,
    )
