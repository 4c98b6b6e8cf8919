"""Traces → token ids and labels with the model's own chat template.

The loss covers what the agent must learn to *produce*: assistant content and assistant tool
calls (and the end-of-turn token that closes them). Everything else (system prompt, user turns,
tool results, template boilerplate) gets label -100. We find those spans on the rendered text:
for assistant message i, the template rendered for ``messages[:i]`` with a generation prompt is a
prefix of the rendering of ``messages[:i+1]``, and the characters between the two are the target;
tokens whose first character falls in a target span are labelled.

No packing: several traces are never concatenated into one sequence. DP-SGD clips each privacy
unit's gradient separately; a packed sequence mixes units in one forward pass (attention crosses
the boundary, the loss is one mean), so one unit's influence could no longer be bounded by C.
Each trace is one sequence, truncated to ``max_length`` tokens and padded only in the batch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from privacy_finetuner.data.records import ToolCall, Trace
from privacy_finetuner.errors import DataError

__all__ = [
    "IGNORE_INDEX",
    "EncodedExample",
    "EncodingStats",
    "ToolCallPrompt",
    "encode_trace",
    "encode_traces",
    "parse_tool_calls",
    "render_messages",
    "tool_call_prompts",
]

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodedExample:
    """One training sequence: ids, labels (-100 = no loss), and the privacy unit's id."""

    input_ids: list[int]
    labels: list[int]
    user_id: str | None

    @property
    def num_targets(self) -> int:
        """Tokens that carry loss."""
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


@dataclass
class EncodingStats:
    """What tokenisation did to the data set (reported, never silent)."""

    examples: int = 0
    truncated: int = 0
    dropped_no_targets: int = 0
    tokens: int = 0
    target_tokens: int = 0
    lengths: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the privacy report."""
        return {
            "examples": self.examples,
            "truncated": self.truncated,
            "dropped_no_targets": self.dropped_no_targets,
            "tokens": self.tokens,
            "target_tokens": self.target_tokens,
            "max_length_seen": max(self.lengths, default=0),
        }


def render_messages(
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    *,
    add_generation_prompt: bool = False,
    tools: Sequence[dict[str, Any]] | None = None,
) -> str:
    """The chat template applied to ``messages``, as text."""
    try:
        text = tokenizer.apply_chat_template(
            list(messages),
            tools=list(tools) if tools else None,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )
    except Exception as exc:  # jinja2 TemplateError, ValueError for no template
        raise DataError(f"the tokenizer's chat template failed on a trace: {exc}") from None
    return str(text)


def _target_spans(
    tokenizer: Any, trace: Trace, tools: Sequence[dict[str, Any]] | None
) -> tuple[str, list[tuple[int, int]]]:
    msgs = [m.to_template() for m in trace.messages]
    full = render_messages(tokenizer, msgs, tools=tools)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(trace.messages):
        if message.role != "assistant":
            continue
        prefix = render_messages(tokenizer, msgs[:i], add_generation_prompt=True, tools=tools)
        upto = render_messages(tokenizer, msgs[: i + 1], tools=tools)
        if not (upto.startswith(prefix) and full.startswith(upto)):
            raise DataError(
                "the tokenizer's chat template is not prefix-consistent, so the assistant "
                "turns cannot be located for the loss mask"
            )
        spans.append((len(prefix), len(upto)))
    return full, spans


def encode_trace(
    trace: Trace,
    tokenizer: Any,
    *,
    max_length: int,
    include_tools: bool = False,
) -> tuple[EncodedExample, bool]:
    """Tokenise one trace; returns the example and whether it was truncated."""
    tools = list(trace.tools) if include_tools else None
    text, spans = _target_spans(tokenizer, trace, tools)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    offsets: list[tuple[int, int]] = [tuple(o) for o in enc["offset_mapping"]]
    labels = [IGNORE_INDEX] * len(ids)
    span_index = 0
    for t, (start, end) in enumerate(offsets):
        while span_index < len(spans) and start >= spans[span_index][1]:
            span_index += 1
        if span_index == len(spans):
            break
        lo, hi = spans[span_index]
        if lo <= start < hi and end > start:
            labels[t] = ids[t]
    truncated = len(ids) > max_length
    return EncodedExample(ids[:max_length], labels[:max_length], trace.user_id), truncated


def encode_traces(
    traces: Sequence[Trace], tokenizer: Any, *, max_length: int, include_tools: bool = False
) -> tuple[list[EncodedExample], EncodingStats]:
    """Tokenise many traces; examples left without a target token (truncation) are dropped and
    counted in the returned stats."""
    stats = EncodingStats()
    examples: list[EncodedExample] = []
    for trace in traces:
        example, truncated = encode_trace(
            trace, tokenizer, max_length=max_length, include_tools=include_tools
        )
        stats.truncated += int(truncated)
        if example.num_targets == 0:
            stats.dropped_no_targets += 1
            continue
        examples.append(example)
        stats.examples += 1
        stats.tokens += len(example.input_ids)
        stats.target_tokens += example.num_targets
        stats.lengths.append(len(example.input_ids))
    return examples, stats


@dataclass(frozen=True)
class ToolCallPrompt:
    """A held-out prompt (the conversation up to a tool call) and the call expected."""

    prompt: str
    expected: tuple[ToolCall, ...]


def tool_call_prompts(
    traces: Sequence[Trace], tokenizer: Any, *, include_tools: bool = False, first_only: bool = True
) -> list[ToolCallPrompt]:
    """For each trace, the rendered prompt before each assistant turn that makes tool calls."""
    prompts: list[ToolCallPrompt] = []
    for trace in traces:
        msgs = [m.to_template() for m in trace.messages]
        tools = list(trace.tools) if include_tools else None
        for i, message in enumerate(trace.messages):
            if message.role == "assistant" and message.tool_calls:
                prompt = render_messages(
                    tokenizer, msgs[:i], add_generation_prompt=True, tools=tools
                )
                prompts.append(ToolCallPrompt(prompt, message.tool_calls))
                if first_only:
                    break
    return prompts


_DECODER = json.JSONDecoder()


def parse_tool_calls(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Tool calls in generated text: every JSON object with a ``name`` and ``arguments``
    (or ``parameters``), wherever the template put it (``<tool_call>`` tags, code fences, …)."""
    calls: list[tuple[str, dict[str, Any]]] = []
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
