"""Agent traces: schema and validation, loading, the synthetic generator, tokenisation.

Torch-free; the torch dataset and collate_fn live in :mod:`privacy_finetuner.data.collate`.
"""

from privacy_finetuner.data.loaders import InvalidRecord, LoadResult, load_traces, write_traces
from privacy_finetuner.data.records import ROLES, Message, ToolCall, Trace, parse_trace
from privacy_finetuner.data.synth import Canary, SynthResult, generate_traces
from privacy_finetuner.data.tokenize import (
    IGNORE_INDEX,
    EncodedExample,
    EncodingStats,
    ToolCallPrompt,
    encode_trace,
    encode_traces,
    parse_tool_calls,
    render_messages,
    tool_call_prompts,
)

__all__ = [
    "IGNORE_INDEX",
    "ROLES",
    "Canary",
    "EncodedExample",
    "EncodingStats",
    "InvalidRecord",
    "LoadResult",
    "Message",
    "SynthResult",
    "ToolCall",
    "ToolCallPrompt",
    "Trace",
    "encode_trace",
    "encode_traces",
    "generate_traces",
    "load_traces",
    "parse_tool_calls",
    "parse_trace",
    "render_messages",
    "tool_call_prompts",
    "write_traces",
]
