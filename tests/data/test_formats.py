"""Anthropic Messages, ShareGPT and Hugging Face ``messages`` + ``tools`` rows → one Trace type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from privacy_finetuner.data import load_traces
from privacy_finetuner.data.formats import detect_format, parse_record
from privacy_finetuner.errors import DataValidationError

_ANTHROPIC: dict[str, Any] = {
    "user_id": "u1",
    "system": "You help.",
    "tools": [
        {
            "name": "lookup_order",
            "description": "Find an order.",
            "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}},
        }
    ],
    "messages": [
        {"role": "user", "content": "Where is order A1?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "lookup_order",
                    "input": {"order_id": "A1"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": '{"status": "shipped"}'}],
                },
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "It shipped."}]},
    ],
}

_SHAREGPT: dict[str, Any] = {
    "conversations": [
        {"from": "system", "value": "You help."},
        {"from": "human", "value": "Balance of ACC1 and ACC2?"},
        {
            "from": "function_call",
            "value": json.dumps(
                [
                    {"name": "get_balance", "arguments": {"account_id": "ACC1"}},
                    {"name": "get_balance", "arguments": {"account_id": "ACC2"}},
                ]
            ),
        },
        {"from": "observation", "value": '{"balance": 1}'},
        {"from": "observation", "value": '{"balance": 2}'},
        {"from": "gpt", "value": "1 and 2."},
    ],
    "tools": json.dumps(
        [
            {
                "name": "get_balance",
                "description": "Balance.",
                "parameters": {"type": "object", "properties": {"account_id": {"type": "string"}}},
            }
        ]
    ),
}


def _write(tmp_path: Path, records: list[Any]) -> Path:
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_anthropic_messages_become_tool_calls_and_tool_messages(tmp_path: Path) -> None:
    assert detect_format(_ANTHROPIC) == "anthropic"
    (trace,) = load_traces(_write(tmp_path, [_ANTHROPIC])).traces
    assert [m.role for m in trace.messages] == ["system", "user", "assistant", "tool", "assistant"]
    call = trace.messages[2].tool_calls[0]
    assert (call.id, call.name, call.arguments) == ("toolu_1", "lookup_order", {"order_id": "A1"})
    assert trace.messages[2].content == "Let me look."
    assert trace.messages[3].tool_call_id == "toolu_1"
    assert trace.messages[3].content == '{"status": "shipped"}'
    assert trace.tools[0]["function"]["parameters"]["properties"] == {
        "order_id": {"type": "string"}
    }
    assert trace.user_id == "u1"


def test_sharegpt_function_calls_and_observations_pair_in_order(tmp_path: Path) -> None:
    (trace,) = load_traces(_write(tmp_path, [_SHAREGPT])).traces
    assert [m.role for m in trace.messages] == [
        "system", "user", "assistant", "tool", "tool", "assistant"
    ]  # fmt: skip
    calls = trace.messages[2].tool_calls
    assert [c.arguments["account_id"] for c in calls] == ["ACC1", "ACC2"]
    assert [m.tool_call_id for m in trace.messages[3:5]] == [c.id for c in calls]
    assert trace.tools[0]["function"]["name"] == "get_balance"


def test_format_errors_name_file_line_and_field(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(_SHAREGPT))
    bad["conversations"][3]["from"] = "observation"
    bad["conversations"].insert(1, {"from": "observation", "value": "x"})
    path = _write(tmp_path, [_ANTHROPIC, bad])
    with pytest.raises(DataValidationError, match=r"t\.jsonl:2: conversations\[1\]: unmatched"):
        load_traces(path)
    result = load_traces(path, skip_invalid=True)
    assert len(result.traces) == 1 and result.invalid[0].code == "unmatched_tool_call_id"


def test_hf_rows_with_messages_and_tools_columns() -> None:
    """A row as ``datasets`` yields it: Arrow fills absent struct fields with None and ``tools``
    is often a JSON string column (the loader passes each row through ``parse_record``)."""
    tools = json.dumps([{"type": "function", "function": {"name": "lookup_order",
                         "parameters": {"type": "object"}}}])  # fmt: skip
    row = {
        "messages": [
            {"role": "user", "content": "Where is A1?", "tool_calls": None, "tool_call_id": None},
            {"role": "assistant", "content": None, "tool_call_id": None, "tool_calls": [
                {"id": "c1", "type": "function",
                 "function": {"name": "lookup_order", "arguments": '{"order_id": "A1"}'}}]},
            {"role": "tool", "content": "shipped", "tool_calls": None, "tool_call_id": "c1"},
            {"role": "assistant", "content": "Shipped.", "tool_calls": None, "tool_call_id": None},
        ],
        "tools": tools,
        "user_id": "u9",
    }  # fmt: skip
    trace = parse_record(row, path="ds[row]", line=3, hf_row=True)
    assert trace.messages[1].tool_calls[0].arguments == {"order_id": "A1"}
    assert trace.tools[0]["function"]["name"] == "lookup_order"
    assert trace.user_id == "u9"
    row["tools"] = "[{"
    with pytest.raises(DataValidationError, match=r"^ds\[row\]:3: tools: invalid_json"):
        parse_record(row, path="ds[row]", line=3, hf_row=True)
