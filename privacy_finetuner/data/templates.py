"""Fitting traces to a model's own chat template, and finding the assistant turns in it.

Real tool-calling templates differ in ways a naive "render the prefix, render the full text,
take the difference" mask cannot survive, so one probe render per tokenizer
(:func:`template_profile`) learns what the template wants:

* **arguments**: a template that prints ``function.arguments`` as given would print a Python
  ``dict`` repr (``{'k': 'v'}``) that no parser reads; such templates get the JSON string.
* **ids**: some templates insist on alphanumeric ids of exactly 9 characters (Mistral). Every
  trace's ids are mapped, consistently for ``tool_calls[].id`` and ``tool_call_id``, to
  ``call`` + 5 digits (9 alphanumerics), a shape every template accepts.
* **tool-call format** (``json``, ``xml``, ``pythonic``, ``deepseek``): read from how the
  template prints a probe call, so evaluation parses what the model was trained to emit.
* a **generation header appended whatever ``add_generation_prompt`` says** is stripped from a
  turn's end; ``{% generation %}`` blocks, where present, give the mask directly.

:func:`target_spans` then locates each assistant turn in the full rendering: the turn as the
template renders it when it is the last message (what the model must generate after the
prompt) is searched for in the full text after the previous turn; failing that (templates that
drop earlier reasoning, close the last tool result differently, or insert the tool list only
after the last user turn), the prompt and the turn are aligned with the full text by
:class:`difflib.SequenceMatcher`. Every span is checked to contain the turn's own content and
call names; a template that defeats all of this gets one error naming the model and the turn.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from privacy_finetuner.data.records import Message, Trace
from privacy_finetuner.data.toolcalls import TOOL_CALL_FORMATS
from privacy_finetuner.errors import DataError

__all__ = [
    "END_MARKERS",
    "TemplateProfile",
    "model_name",
    "render_messages",
    "target_spans",
    "template_messages",
    "template_profile",
]

_PROBE_USER = "Probe request zq1"
_PROBE_ANSWER = "Probe answer zq2"
_PROBE_FN = "probe_lookup"
_PROBE_KEY = "probe_key"
_PROBE_VALUE = "probe_value"
_PROBE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": _PROBE_FN,
            "description": "Probe.",
            "parameters": {
                "type": "object",
                "properties": {_PROBE_KEY: {"type": "string"}},
                "required": [_PROBE_KEY],
            },
        },
    }
]
#: End-of-turn tokens of the common families (a turn's target ends with one of them).
END_MARKERS = (
    "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "</s>", "<｜end▁of▁sentence｜>",
    "<|endoftext|>", "<end_of_turn>", "<|return|>", "<|end_of_text|>",
)  # fmt: skip


@dataclass(frozen=True)
class TemplateProfile:
    """What one probe render learnt about a tokenizer's chat template."""

    model: str
    arguments_as_json: bool
    tool_call_format: str
    header_regardless: str
    generation_blocks: bool


def model_name(tokenizer: Any) -> str:
    """The model's name for error messages (``name_or_path`` or the tokenizer's class)."""
    name = getattr(tokenizer, "name_or_path", "") or ""
    return str(name) or type(tokenizer).__name__


def render_messages(
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    *,
    add_generation_prompt: bool = False,
    tools: Sequence[dict[str, Any]] | None = None,
) -> str:
    """The chat template applied to ``messages``, as text.

    Raises:
        DataError: the template raised (names the model and the template's own message).
    """
    try:
        text = tokenizer.apply_chat_template(
            list(messages),
            tools=list(tools) if tools else None,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )
    except Exception as exc:  # jinja2 TemplateError, ValueError for no template
        raise DataError(
            f"the chat template of {model_name(tokenizer)} failed on a trace: {exc}"
        ) from None
    return str(text)


def _probe_messages(as_json: bool) -> list[dict[str, Any]]:
    args: Any = {_PROBE_KEY: _PROBE_VALUE}
    call = {
        "id": "call00001",
        "type": "function",
        "function": {"name": _PROBE_FN, "arguments": json.dumps(args) if as_json else args},
    }
    return [
        {"role": "user", "content": _PROBE_USER},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": '{"ok": true}', "tool_call_id": "call00001", "name": _PROBE_FN},
        {"role": "assistant", "content": _PROBE_ANSWER},
    ]


def _detect_format(text: str) -> str:
    if "tool▁sep" in text:
        return "deepseek"
    if re.search(rf"<function={_PROBE_FN}\b", text):
        return "xml"
    if re.search(rf"{_PROBE_FN}\(\s*{_PROBE_KEY}\s*=", text):
        return "pythonic"
    return "json"


def _regardless_header(tokenizer: Any) -> str:
    """The header a template appends after the last message whatever ``add_generation_prompt``
    says (empty for templates that honour the flag): it is the prompt, never a target."""
    user = [{"role": "user", "content": _PROBE_USER}]
    with_prompt = render_messages(tokenizer, user, add_generation_prompt=True)
    without = render_messages(tokenizer, user, add_generation_prompt=False)
    if with_prompt != without:
        return ""
    tail = without[without.rfind(_PROBE_USER) + len(_PROBE_USER) :]
    cut = max((tail.rfind(m) + len(m) for m in END_MARKERS if m in tail), default=-1)
    if cut < 0:
        eos = getattr(tokenizer, "eos_token", None)
        cut = tail.rfind(eos) + len(eos) if eos and eos in tail else -1
    return tail[cut:] if cut >= 0 else ""


def _probe(tokenizer: Any, name: str) -> tuple[str, bool]:
    """The probe conversation rendered (without tools, so a tool list cannot masquerade as a
    call; with them if the template insists) and whether arguments must be a JSON string."""
    last: DataError | None = None
    for as_json in (False, True):
        for tools in (None, _PROBE_TOOLS):
            try:
                text = render_messages(tokenizer, _probe_messages(as_json), tools=tools)
            except DataError as exc:
                last = exc
                continue
            if not as_json and f"'{_PROBE_KEY}'" in text:
                break  # printed as given: a dict shows as its Python repr, so pass JSON text
            return text, as_json
    raise DataError(
        f"the chat template of {name} renders no tool call, neither with the arguments as an "
        f"object nor as a JSON string ({last})"
    )


_PROFILES: dict[tuple[int, str], TemplateProfile] = {}


def template_profile(tokenizer: Any, tool_call_format: str = "auto") -> TemplateProfile:
    """Probe the tokenizer's chat template once (cached per tokenizer and template).

    Args:
        tool_call_format: "auto" (detect) or one of ``json``, ``xml``, ``pythonic``,
            ``deepseek`` to override what the probe finds.

    Raises:
        DataError: the template renders neither a dict nor a JSON string of arguments.
    """
    template = str(getattr(tokenizer, "chat_template", "") or "")
    key = (id(tokenizer), model_name(tokenizer) + "\0" + template)
    cached = _PROFILES.get(key)
    if cached is None:
        name = model_name(tokenizer)
        text, as_json = _probe(tokenizer, name)
        if _PROBE_FN not in text:
            raise DataError(
                f"the chat template of {name} does not render assistant tool calls "
                "(tool_calls are dropped), so a tool-calling agent cannot be trained with it"
            )
        cached = TemplateProfile(
            model=name,
            arguments_as_json=as_json,
            tool_call_format=_detect_format(text),
            header_regardless=_regardless_header(tokenizer),
            generation_blocks=bool(re.search(r"\{%-?\s*generation\s*-?%\}", template)),
        )
        if len(_PROFILES) >= 64:  # a long-lived service loads a tokenizer per job
            _PROFILES.clear()
        _PROFILES[key] = cached
    if tool_call_format != "auto":
        if tool_call_format not in TOOL_CALL_FORMATS:
            raise DataError(
                f"unknown tool-call format {tool_call_format!r}; choose auto or one of "
                + ", ".join(TOOL_CALL_FORMATS)
            )
        return TemplateProfile(
            cached.model,
            cached.arguments_as_json,
            tool_call_format,
            cached.header_regardless,
            cached.generation_blocks,
        )
    return cached


def template_messages(trace: Trace, profile: TemplateProfile) -> list[dict[str, Any]]:
    """The trace's messages in the form the template expects: stable 9-alphanumeric ids (one
    map for ``tool_calls[].id`` and ``tool_call_id``), arguments as dict or JSON string, and a
    tool message's ``name`` (the function it answers) where the trace leaves it out."""
    ids: dict[str, str] = {}

    def mapped(original: str) -> str:
        if original not in ids:
            ids[original] = f"call{len(ids) + 1:05d}"
        return ids[original]

    called = {c.id: c.name for m in trace.messages for c in m.tool_calls}
    out: list[dict[str, Any]] = []
    for m in trace.messages:
        msg: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            msg["tool_calls"] = [
                {
                    "id": mapped(c.id),
                    "type": "function",
                    "function": {
                        "name": c.name,
                        "arguments": (
                            json.dumps(c.arguments, ensure_ascii=False)
                            if profile.arguments_as_json
                            else c.arguments
                        ),
                    },
                }
                for c in m.tool_calls
            ]
        if m.tool_call_id is not None:
            msg["tool_call_id"] = mapped(m.tool_call_id)
        if m.name is not None:
            msg["name"] = m.name
        elif m.role == "tool" and m.tool_call_id in called:
            msg["name"] = called[m.tool_call_id]  # Hermes-style templates require it
        out.append(msg)
    return out


def _map_end(part: str, full: str, lo: int = 0) -> int | None:
    """The position in ``full`` where ``part``'s last character lands, or None.

    ``part`` is a rendering of a prefix of the conversation; where it is a prefix of ``full`` the
    answer is its length. Otherwise the two are aligned and the end of ``part`` must fall at the
    end of a matching block of at least a few characters at or after ``lo``.
    """
    candidates = tuple(dict.fromkeys((part, part.rstrip())))
    for candidate in candidates:
        # Trailing whitespace after a header or a closing token is often formatting noise
        # that the full rendering spells differently (indentation left by a block tag).
        if full.startswith(candidate):
            return len(candidate)
    for candidate in candidates:
        mapped = _align_end(candidate, full, lo)
        if mapped is not None:
            return mapped
    return None


def _align_end(part: str, full: str, lo: int) -> int | None:
    common = len(_common_prefix(part, full))
    matcher = difflib.SequenceMatcher(None, part[common:], full[common:], autojunk=False)
    tail = len(part) - common
    for block in matcher.get_matching_blocks():
        if block.size and block.a + block.size == tail and block.size >= min(tail, 4):
            end = common + block.b + block.size
            return end if end >= lo else None
    return None


def _common_prefix(a: str, b: str) -> str:
    n = min(len(a), len(b))
    k = 0
    while k < n and a[k] == b[k]:
        k += 1
    return a[:k]


def _strip_header(text: str, header: str) -> str:
    return text[: -len(header)] if header and text.endswith(header) else text


def _find_turn(full: str, turn: str, prompt: str, lo: int) -> tuple[int, int] | None:
    """Where ``turn`` (the turn as rendered last) occurs in ``full`` after ``lo``, anchored by the
    end of its prompt (the generation header, the last user words) so that a tool result or user
    turn with the same text and closing token is not taken for it (the anchor shrinks from 32
    to 8 characters; with no anchor found the caller falls back to alignment)."""
    for k in (32, 16, 8):
        anchor = prompt[-k:]
        at = full.find(anchor + turn, lo)
        if at >= 0:
            start = at + len(anchor)
            return start, start + len(turn)
    return None


def _covers(span_text: str, message: Message) -> bool:
    """The span holds the turn's own visible content and every call's name."""
    visible = message.content.rsplit("</think>", 1)[-1].strip()
    if visible and visible not in span_text:
        return False
    return all(c.name in span_text for c in message.tool_calls)


def target_spans(
    tokenizer: Any,
    trace: Trace,
    profile: TemplateProfile,
    messages: list[dict[str, Any]],
    tools: Sequence[dict[str, Any]] | None,
) -> tuple[str, list[tuple[int, int]]]:
    """The full rendering and the character span ``[start, end)`` of each assistant turn in it.

    Raises:
        DataError: an assistant turn cannot be located (names the model, the turn and why).
    """
    full = render_messages(tokenizer, messages, tools=tools)
    spans: list[tuple[int, int]] = []
    previous_end = 0
    for i, message in enumerate(trace.messages):
        if message.role != "assistant":
            continue
        prompt = render_messages(tokenizer, messages[:i], add_generation_prompt=True, tools=tools)
        upto = _strip_header(
            render_messages(tokenizer, messages[: i + 1], tools=tools), profile.header_regardless
        )
        span: tuple[int, int] | None = None
        if full.startswith(prompt) and full.startswith(upto) and upto.startswith(prompt):
            span = (len(prompt), len(upto))
        else:
            begin = _map_end(prompt, upto)
            turn = upto[begin:] if begin is not None else ""
            found = None
            if turn.strip():
                found = _find_turn(full, turn, prompt, previous_end) or _find_turn(
                    full, turn.rstrip(), prompt, previous_end
                )
            if found is not None:
                span = found
            else:
                start, end = _map_end(prompt, full, previous_end), _map_end(upto, full)
                if start is not None and end is not None and end > start:
                    span = (start, end)
        if span is None or span[0] < previous_end or not _covers(full[span[0] : span[1]], message):
            raise DataError(
                f"cannot locate assistant turn messages[{i}] in the chat template of "
                f"{profile.model}: the conversation rendered up to that turn neither is a prefix "
                "of the full rendering nor aligns with it, so the loss mask would be wrong "
                "(check the template with `privacy-finetuner data check`)"
            )
        spans.append(span)
        previous_end = span[1]
    return full, spans
