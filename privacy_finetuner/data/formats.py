"""Trace formats beyond OpenAI's, converted to the one internal :class:`Trace`.

Recognised per record (so one file may even mix them):

* OpenAI chat (``messages`` with ``tool_calls`` / ``tool_call_id``): the native form.
* Anthropic Messages: ``content`` lists of ``text`` / ``tool_use`` / ``tool_result`` blocks, a
  top-level ``system`` and tools with ``input_schema``.
* ShareGPT: ``conversations`` of ``{"from": "human"|"gpt"|"system"|"function_call"|
  "observation", "value": ...}`` (the LLaMA-Factory convention for tool calls), ``tools`` as a
  JSON string or list.
* Hugging Face rows with ``messages`` + ``tools`` columns: ``tools`` may be a JSON string, Arrow
  fills absent struct fields with None (dropped here), ``arguments`` may be a dict.

Every conversion error is a :class:`RecordError` naming file, line, a code and schema field
names, never a value of the record.
"""

from __future__ import annotations

import json
from typing import Any

from privacy_finetuner.data.records import RecordError, Trace, parse_trace

__all__ = ["detect_format", "parse_record", "to_openai_record"]

_SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "observation": "tool",
    "tool": "tool",
    "function_call": "function_call",
}


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def detect_format(raw: Any) -> str:
    """``"openai"``, ``"anthropic"`` or ``"sharegpt"`` for one decoded record."""
    if not isinstance(raw, dict):
        return "openai"
    if "conversations" in raw and "messages" not in raw:
        return "sharegpt"
    messages = raw.get("messages")
    if isinstance(messages, list):
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, list) and any(
                isinstance(b, dict) and b.get("type") in ("tool_use", "tool_result")
                for b in content
            ):
                return "anthropic"
    if isinstance(raw.get("system"), (str, list)):
        return "anthropic"
    tools = raw.get("tools")
    if isinstance(tools, list) and any(isinstance(t, dict) and "input_schema" in t for t in tools):
        return "anthropic"
    return "openai"


class _At:
    def __init__(self, path: str | None, line: int | None) -> None:
        self.path, self.line = path, line

    def error(self, code: str, field: str, detail: str) -> RecordError:
        return RecordError(code, field, detail, path=self.path, line=self.line)


def _tools_list(raw: Any, at: _At) -> list[dict[str, Any]]:
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise at.error("invalid_json", "tools", f"{exc.msg} at char {exc.pos}") from None
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise at.error("wrong_type", "tools", "must be a list of objects")
    out: list[dict[str, Any]] = []
    for t in raw:
        if "function" in t or t.get("type") == "function":
            out.append(t)
        else:  # Anthropic / bare function schema
            params = t.get("input_schema", t.get("parameters", {"type": "object"}))
            fn = {"name": t.get("name"), "description": t.get("description", "")}
            out.append({"type": "function", "function": {**fn, "parameters": params}})
    return out


def _block_text(content: Any, field: str, at: _At) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for k, block in enumerate(content):
            if not isinstance(block, dict) or block.get("type") != "text":
                raise at.error("unsupported_content", f"{field}[{k}]", "only text blocks here")
            texts.append(str(block.get("text", "")))
        return "".join(texts)
    raise at.error("wrong_type", field, "must be a string or a list of text blocks")


def _from_anthropic(raw: dict[str, Any], at: _At) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    system = raw.get("system")
    if system:
        messages.append({"role": "system", "content": _block_text(system, "system", at)})
    for i, m in enumerate(raw.get("messages") or []):
        if not isinstance(m, dict):
            raise at.error("wrong_type", f"messages[{i}]", "must be an object")
        role, content = m.get("role"), m.get("content")
        if role not in ("user", "assistant", "system"):
            raise at.error("unknown_role", f"messages[{i}].role", "expected user or assistant")
        if not isinstance(content, list):
            messages.append({"role": role, "content": content})
            continue
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for k, block in enumerate(content):
            where = f"messages[{i}].content[{k}]"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                texts.append(str(block.get("text", "")))
            elif kind == "tool_use" and role == "assistant":
                if not isinstance(block.get("input", {}), dict):
                    raise at.error("wrong_type", f"{where}.input", "must be an object")
                calls.append(
                    {
                        "id": block.get("id"),
                        "type": "function",
                        "function": {
                            "name": block.get("name"),
                            "arguments": block.get("input", {}),
                        },
                    }
                )
            elif kind == "tool_result" and role == "user":
                result = _block_text(block.get("content"), f"{where}.content", at)
                messages.append(
                    {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": result}
                )
            else:
                raise at.error(
                    "unsupported_content", f"{where}.type", "expected text, tool_use or tool_result"
                )
        if role == "assistant":
            out: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
            if calls:
                out["tool_calls"] = calls
            messages.append(out)
        elif texts:
            messages.append({"role": role, "content": "".join(texts)})
    record: dict[str, Any] = {
        k: raw[k] for k in ("user_id", "session_id", "meta", "metadata", "id") if k in raw
    }
    record["messages"] = messages
    record["tools"] = _tools_list(raw.get("tools"), at)
    return record


def _sharegpt_call(value: Any, field: str, at: _At) -> list[dict[str, Any]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise at.error("invalid_json", field, f"{exc.msg} at char {exc.pos}") from None
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise at.error("wrong_type", field, "a function call needs a name and arguments")
        args = item.get("arguments", item.get("parameters", {}))
        calls.append({"type": "function", "function": {"name": item["name"], "arguments": args}})
    return calls


def _from_sharegpt(raw: dict[str, Any], at: _At) -> dict[str, Any]:
    turns = raw.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise at.error("missing_field", "conversations", "must be a non-empty list")
    messages: list[dict[str, Any]] = []
    if isinstance(raw.get("system"), str) and raw["system"]:
        messages.append({"role": "system", "content": raw["system"]})
    pending: list[str] = []  # ids of calls not yet answered, in order
    n_calls = 0
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise at.error("wrong_type", f"conversations[{i}]", "must be an object")
        role = _SHAREGPT_ROLES.get(str(turn.get("from", turn.get("role", ""))))
        value = turn.get("value", turn.get("content"))
        if role is None:
            raise at.error(
                "unknown_role",
                f"conversations[{i}].from",
                "expected human, gpt, system, " "function_call or observation",
            )
        if role == "function_call":
            calls = _sharegpt_call(value, f"conversations[{i}].value", at)
            for call in calls:
                n_calls += 1
                call["id"] = f"call_{n_calls}"
                pending.append(call["id"])
            messages.append({"role": "assistant", "content": "", "tool_calls": calls})
        elif role == "tool":
            if not pending:
                raise at.error(
                    "unmatched_tool_call_id", f"conversations[{i}]", "observation without a call"
                )
            content = value if isinstance(value, str) else json.dumps(value)
            messages.append({"role": "tool", "tool_call_id": pending.pop(0), "content": content})
        else:
            if not isinstance(value, str):
                raise at.error("wrong_type", f"conversations[{i}].value", "must be a string")
            messages.append({"role": role, "content": value})
    record: dict[str, Any] = {
        k: raw[k] for k in ("user_id", "session_id", "meta", "metadata", "id") if k in raw
    }
    record["messages"] = messages
    record["tools"] = _tools_list(raw.get("tools"), at)
    return record


def to_openai_record(raw: Any, *, path: str | None = None, line: int | None = None) -> Any:
    """``raw`` (any recognised format) as an OpenAI-form record for :func:`parse_trace`."""
    at = _At(path, line)
    fmt = detect_format(raw)
    if fmt == "anthropic":
        return _from_anthropic(raw, at)
    if fmt == "sharegpt":
        return _from_sharegpt(raw, at)
    if isinstance(raw, dict) and isinstance(raw.get("tools"), str):
        raw = {**raw, "tools": _tools_list(raw["tools"], at)}
    return raw


def parse_record(
    raw: Any, *, path: str | None = None, line: int | None = None, hf_row: bool = False
) -> Trace:
    """Validate one record of any recognised format and return it as a :class:`Trace`.

    ``hf_row``: a Hugging Face datasets row, whose absent struct fields are None (dropped).
    """
    if hf_row:
        raw = _drop_none(raw)
    return parse_trace(to_openai_record(raw, path=path, line=line), path=path, line=line)
