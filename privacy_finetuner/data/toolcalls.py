"""Tool calls in generated text, one parser per template family, and schema-aware comparison.

Formats (``TOOL_CALL_FORMATS``):

* ``json``: a JSON object with ``name`` and ``arguments`` (or ``parameters``) wherever the
  template puts it: Hermes / Qwen2.5 ``<tool_call>`` tags, Llama 3.x bare JSON, Mistral
  ``[TOOL_CALLS][...]`` lists, code fences.
* ``xml``: Qwen3-Coder / GLM style ``<function=NAME><parameter=KEY>VALUE</parameter></function>``;
  values are text, typed later by the tool's JSON schema.
* ``pythonic``: Llama-3.2 / Llama-4 style ``[get_order(order_id="A1", n=2)]``, read with
  :mod:`ast` (``literal_eval`` of each argument), never ``eval``.
* ``deepseek``: ``<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME`` followed by a fenced JSON
  object (V3/R1), or ``NAME<｜tool▁sep｜>{...}`` (V3.1).

``auto`` tries them all (the first that finds a call wins). The pipeline picks the format from
the chat template with one probe render (:mod:`privacy_finetuner.data.templates`).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = [
    "TOOL_CALL_FORMATS",
    "coerce_arguments",
    "parse_tool_calls",
    "same_calls",
]

TOOL_CALL_FORMATS: tuple[str, ...] = ("json", "xml", "pythonic", "deepseek")

ParsedCall = tuple[str, dict[str, Any]]
_DECODER = json.JSONDecoder()


def _parse_json(text: str) -> list[ParsedCall]:
    calls: list[ParsedCall] = []
    pos = text.find("{")
    while pos != -1:
        try:
            obj, end = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError:
            pos = text.find("{", pos + 1)
            continue
        args = obj.get("arguments", obj.get("parameters", {})) if isinstance(obj, dict) else None
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                args = None
        if isinstance(obj, dict) and isinstance(obj.get("name"), str) and isinstance(args, dict):
            calls.append((obj["name"], args))
            pos = text.find("{", end)
        else:
            pos = text.find("{", pos + 1)
    return calls


_XML_FUNCTION = re.compile(r"<function=([^>\s]+)>(.*?)</function>", re.DOTALL)
_XML_PARAMETER = re.compile(r"<parameter=([^>\s]+)>(.*?)</parameter>", re.DOTALL)


def _parse_xml(text: str) -> list[ParsedCall]:
    calls: list[ParsedCall] = []
    for fn in _XML_FUNCTION.finditer(text):
        args = {}
        for p in _XML_PARAMETER.finditer(fn.group(2)):
            value = p.group(2)
            args[p.group(1)] = (
                value[1:-1] if value.startswith("\n") and value.endswith("\n") else value
            )
        calls.append((fn.group(1), args))
    return calls


def _pythonic_call(node: ast.expr) -> ParsedCall | None:
    if not isinstance(node, ast.Call) or node.args:
        return None
    func = node.func
    if isinstance(func, ast.Name):
        name = func.id
    elif isinstance(func, ast.Attribute):
        name = ast.unparse(func)
    else:
        return None
    args: dict[str, Any] = {}
    for kw in node.keywords:
        if kw.arg is None:
            return None
        try:
            args[kw.arg] = ast.literal_eval(kw.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
    return name, args


def _unquoted(text: str, start: int) -> Iterator[tuple[int, str]]:
    """(index, character) of ``text`` from ``start`` outside quoted strings (escapes honoured);
    the quotes themselves are not yielded."""
    quote: str | None = None
    k = start
    while k < len(text):
        ch = text[k]
        if quote:
            if ch == "\\":
                k += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        else:
            yield k, ch
        k += 1


def _closing_bracket(text: str, start: int) -> int:
    """Index of the ``]`` that closes the ``[`` at ``start`` (quotes respected), or -1."""
    depth = 0
    for k, ch in _unquoted(text, start):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth == 0:
                return k
    return -1


def _split_top(text: str, sep: str = ",") -> list[str]:
    """``text`` split at ``sep`` outside brackets and quotes."""
    parts: list[str] = []
    depth, begin = 0, 0
    for k, ch in _unquoted(text, 0):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[begin:k])
            begin = k + 1
    parts.append(text[begin:])
    return parts


_CALL = re.compile(r"\s*([A-Za-z_][\w.]*)\((.*)\)\s*", re.DOTALL)


def _lenient_calls(inner: str) -> list[ParsedCall] | None:
    """``f(a=x, b=2)`` lists whose values are printed bare (``"%s" | format(v)`` in some Llama
    3.2 templates: ``city=Lisbon``), which are not Python: each value is a literal where
    :func:`ast.literal_eval` reads one, else its text (typed later by the tool's schema)."""
    calls: list[ParsedCall] = []
    for part in _split_top(inner):
        match = _CALL.fullmatch(part)
        if match is None:
            return None
        args: dict[str, Any] = {}
        body = match.group(2).strip()
        for item in _split_top(body) if body else []:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip().isidentifier():
                return None
            try:
                args[key.strip()] = ast.literal_eval(raw.strip())
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                args[key.strip()] = raw.strip()
        calls.append((match.group(1), args))
    return calls


def _parse_pythonic(text: str) -> list[ParsedCall]:
    """Every ``[f(a=1), g(b="x")]`` list in ``text``: parsed by
    :func:`ast.parse`, arguments by :func:`ast.literal_eval`; nothing is executed."""
    calls: list[ParsedCall] = []
    start = text.find("[")
    while start != -1:
        end = _closing_bracket(text, start)
        if end == -1:
            break
        try:
            tree = ast.parse(text[start : end + 1], mode="eval")
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            lenient = _lenient_calls(text[start + 1 : end])
            if lenient:
                calls.extend(lenient)
                start = text.find("[", end + 1)
            else:
                start = text.find("[", start + 1)
            continue
        if isinstance(tree.body, ast.List) and tree.body.elts:
            parsed = [_pythonic_call(e) for e in tree.body.elts]
            if all(p is not None for p in parsed):
                calls.extend(p for p in parsed if p is not None)
                start = text.find("[", end + 1)
                continue
            if all(isinstance(e, ast.Call) for e in tree.body.elts):  # bare values: ACC1, ORD-7
                lenient = _lenient_calls(text[start + 1 : end])
                if lenient:
                    calls.extend(lenient)
                    start = text.find("[", end + 1)
                    continue
        start = text.find("[", start + 1)
    return calls


_DS_SEP = "<｜tool▁sep｜>"
_DS_BEGIN = "<｜tool▁call▁begin｜>"
_DS_END = "<｜tool▁call▁end｜>"
_FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL)


def _parse_deepseek(text: str) -> list[ParsedCall]:
    calls: list[ParsedCall] = []
    for chunk in text.split(_DS_BEGIN)[1:]:
        body = chunk.split(_DS_END, 1)[0]
        if _DS_SEP not in body:
            continue
        head, rest = body.split(_DS_SEP, 1)
        if head.strip() in ("", "function"):  # V3 / R1: function<sep>NAME\n```json\n{...}\n```
            name, _, rest = rest.partition("\n")
            fenced = _FENCE.search(rest)
            payload = fenced.group(1) if fenced else rest
        else:  # V3.1: NAME<sep>{...}
            name, payload = head, rest
        try:
            args = json.loads(payload.strip())
        except json.JSONDecodeError:
            continue
        if isinstance(args, dict) and name.strip():
            calls.append((name.strip(), args))
    return calls


_PARSERS = {
    "json": _parse_json,
    "xml": _parse_xml,
    "pythonic": _parse_pythonic,
    "deepseek": _parse_deepseek,
}


def parse_tool_calls(text: str, format: str = "auto") -> list[ParsedCall]:
    """The ``(name, arguments)`` tool calls in ``text`` for one format (or ``auto``: the first
    parser, in the order DeepSeek, XML, JSON, pythonic, that finds any)."""
    if format != "auto":
        if format not in _PARSERS:
            raise ValueError(f"unknown tool-call format {format!r}")
        return _PARSERS[format](text)
    for name in ("deepseek", "xml", "json", "pythonic"):
        calls = _PARSERS[name](text)
        if calls:
            return calls
    return []


def _schemas(tools: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for tool in tools:
        fn = tool.get("function", tool)
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            params = fn.get("parameters") or fn.get("input_schema") or {}
            props = params.get("properties") if isinstance(params, dict) else None
            out[fn["name"]] = props if isinstance(props, dict) else {}
    return out


def _coerce(value: Any, schema: Any) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    try:
        if kind == "integer" and isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value.strip())
        if kind == "number" and isinstance(value, str):
            return float(value.strip())
        if (
            kind == "boolean"
            and isinstance(value, str)
            and value.strip().lower() in ("true", "false")
        ):
            return value.strip().lower() == "true"
        if kind in ("object", "array") and isinstance(value, str):
            return json.loads(value)
        if kind == "string" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    except (ValueError, json.JSONDecodeError):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)  # 5 == 5.0, as JSON does not distinguish them
    return value


def coerce_arguments(
    name: str, arguments: dict[str, Any], tools: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """``arguments`` typed by the tool's JSON schema: XML's ``"3"`` for an integer becomes 3, a
    string parameter given as a number becomes text, numbers compare as numbers."""
    props = _schemas(tools).get(name, {})
    return {k: _coerce(v, props.get(k)) for k, v in arguments.items()}


def same_calls(
    got: Sequence[ParsedCall], want: Sequence[ParsedCall], tools: Sequence[dict[str, Any]] = ()
) -> bool:
    """The calls agree: same names in order and equal arguments after schema coercion."""
    if len(got) != len(want):
        return False
    return all(
        g[0] == w[0] and coerce_arguments(g[0], g[1], tools) == coerce_arguments(w[0], w[1], tools)
        for g, w in zip(got, want, strict=True)
    )
