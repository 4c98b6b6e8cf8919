"""Traces → token ids and labels with the model's own chat template.

The loss covers what the agent must learn to *produce*: assistant content and assistant tool
calls (and the end-of-turn token that closes them). Everything else (system prompt, user turns,
tool results, template boilerplate) gets label -100. The template's ``{% generation %}`` mask
is used where it has one; otherwise :func:`~privacy_finetuner.data.templates.target_spans` finds
each assistant turn in the rendered text and only tokens wholly inside a turn are labelled.
Traces are first fitted to the template (ids, argument form, tool schemas): see
:mod:`privacy_finetuner.data.templates`.

No packing: several traces are never concatenated into one sequence. DP-SGD clips each privacy
unit's gradient separately; a packed sequence mixes units in one forward pass (attention crosses
the boundary, the loss is one mean), so one unit's influence could no longer be bounded by C.
Each trace is one sequence, truncated to ``max_length`` tokens and padded only in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from privacy_finetuner.data.records import ToolCall, Trace
from privacy_finetuner.data.templates import (
    TemplateProfile,
    render_messages,
    target_spans,
    template_messages,
    template_profile,
)
from privacy_finetuner.data.toolcalls import parse_tool_calls
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


def _labels_from_spans(
    ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]
) -> list[int]:
    """Label a token only if it lies wholly inside a target span (a token straddling the
    boundary, e.g. a merged header and content, would teach the model part of the prompt)."""
    labels = [IGNORE_INDEX] * len(ids)
    span_index = 0
    for t, (start, end) in enumerate(offsets):
        while span_index < len(spans) and start >= spans[span_index][1]:
            span_index += 1
        if span_index == len(spans):
            break
        lo, hi = spans[span_index]
        if lo <= start and end <= hi and end > start:
            labels[t] = ids[t]
    return labels


def _tools_of(trace: Trace, include_tools: bool) -> list[dict[str, Any]] | None:
    return list(trace.tools) if include_tools and trace.tools else None


def encode_trace(
    trace: Trace,
    tokenizer: Any,
    *,
    max_length: int,
    include_tools: bool = True,
    tool_call_format: str = "auto",
) -> tuple[EncodedExample, bool]:
    """Tokenise one trace; returns the example and whether it was truncated.

    The trace's tool schemas go to the template (``tools=``) whenever it carries them
    (``include_tools=False`` leaves them out), so the model learns to choose among the tools it
    is shown, as it will be at inference.
    """
    profile = template_profile(tokenizer, tool_call_format)
    tools = _tools_of(trace, include_tools)
    messages = template_messages(trace, profile)
    if profile.generation_blocks:
        ids, labels = _generation_mask(tokenizer, messages, tools, profile)
    else:
        text, spans = target_spans(tokenizer, trace, profile, messages, tools)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        offsets: list[tuple[int, int]] = [(int(o[0]), int(o[1])) for o in enc["offset_mapping"]]
        labels = _labels_from_spans(ids, offsets, spans)
    truncated = len(ids) > max_length
    return EncodedExample(ids[:max_length], labels[:max_length], trace.user_id), truncated


def _generation_mask(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    profile: TemplateProfile,
) -> tuple[list[int], list[int]]:
    """The template's own ``{% generation %}`` mask (``return_assistant_tokens_mask``)."""
    try:
        enc = tokenizer.apply_chat_template(
            messages,
            tools=tools,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
    except Exception as exc:  # jinja2 errors, a slow tokenizer without char_to_token
        raise DataError(
            f"the chat template of {profile.model} failed with its {{% generation %}} mask: {exc}"
        ) from None
    ids = [int(x) for x in enc["input_ids"]]
    mask = [int(x) for x in enc["assistant_masks"]]
    return ids, [t if m else IGNORE_INDEX for t, m in zip(ids, mask, strict=True)]


def encode_traces(
    traces: Sequence[Trace],
    tokenizer: Any,
    *,
    max_length: int,
    include_tools: bool = True,
    tool_call_format: str = "auto",
) -> tuple[list[EncodedExample], EncodingStats]:
    """Tokenise many traces; examples left without a target token (truncation) are dropped and
    counted in the returned stats."""
    stats = EncodingStats()
    examples: list[EncodedExample] = []
    for trace in traces:
        example, truncated = encode_trace(
            trace,
            tokenizer,
            max_length=max_length,
            include_tools=include_tools,
            tool_call_format=tool_call_format,
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
    """A held-out prompt (the conversation up to a tool call), the calls expected, the tool
    schemas the trace carries (to type parsed values) and the template's tool-call format."""

    prompt: str
    expected: tuple[ToolCall, ...]
    tools: tuple[dict[str, Any], ...] = ()
    format: str = "auto"


def tool_call_prompts(
    traces: Sequence[Trace],
    tokenizer: Any,
    *,
    include_tools: bool = True,
    first_only: bool = True,
    tool_call_format: str = "auto",
) -> list[ToolCallPrompt]:
    """For each trace, the rendered prompt before each assistant turn that makes tool calls,
    rendered exactly as in training (same ids, argument form and ``tools=``)."""
    profile = template_profile(tokenizer, tool_call_format)
    prompts: list[ToolCallPrompt] = []
    for trace in traces:
        msgs = template_messages(trace, profile)
        tools = _tools_of(trace, include_tools)
        for i, message in enumerate(trace.messages):
            if message.role == "assistant" and message.tool_calls:
                prompt = render_messages(
                    tokenizer, msgs[:i], add_generation_prompt=True, tools=tools
                )
                prompts.append(
                    ToolCallPrompt(
                        prompt, message.tool_calls, trace.tools, profile.tool_call_format
                    )
                )
                if first_only:
                    break
    return prompts
