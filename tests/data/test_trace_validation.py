from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from privacy_finetuner.data import load_traces, parse_trace
from privacy_finetuner.errors import DataError, DataValidationError, NotFoundError


def _good() -> dict[str, Any]:
    return {
        "user_id": "u1",
        "session_id": "s1",
        "messages": [
            {"role": "system", "content": "You help."},
            {"role": "user", "content": "Where is order 7?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "lookup_order", "arguments": '{"order_id": "7"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"status": "shipped"}'},
            {"role": "assistant", "content": "It shipped."},
        ],
    }


def _file(tmp_path: Path, records: list[Any]) -> Path:
    path = tmp_path / "traces.jsonl"
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_valid_trace_parses() -> None:
    trace = parse_trace(_good())
    assert trace.user_id == "u1"
    assert trace.messages[2].tool_calls[0].arguments == {"order_id": "7"}


def _bad_unknown_role(r: dict[str, Any]) -> None:
    r["messages"][1]["role"] = "customer"


def _bad_arguments(r: dict[str, Any]) -> None:
    r["messages"][2]["tool_calls"][0]["function"]["arguments"] = "{order_id: 7"


def _bad_tool_id(r: dict[str, Any]) -> None:
    r["messages"][3]["tool_call_id"] = "nope"


def _bad_no_assistant(r: dict[str, Any]) -> None:
    r["messages"] = r["messages"][:2]


def _bad_messages(r: dict[str, Any]) -> None:
    r["messages"] = "hello"


def _bad_key(r: dict[str, Any]) -> None:
    r["colour"] = "red"


def _bad_no_name(r: dict[str, Any]) -> None:
    del r["messages"][2]["tool_calls"][0]["function"]["name"]


def _bad_tool_without_id(r: dict[str, Any]) -> None:
    del r["messages"][3]["tool_call_id"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_bad_unknown_role, r"messages\[1\]: unknown role 'customer'"),
        (_bad_arguments, r"messages\[2\].tool_calls\[0\].function.arguments is not valid JSON"),
        (_bad_tool_id, r"tool_call_id 'nope' answers no earlier tool call"),
        (_bad_no_assistant, "no assistant message"),
        (_bad_messages, "'messages' must be a non-empty list"),
        (_bad_key, "unknown key 'colour'"),
        (_bad_no_name, "function.name must be a non-empty string"),
        (_bad_tool_without_id, "a tool message needs tool_call_id"),
    ],
)
def test_each_error_names_file_and_line(tmp_path: Path, mutate: Any, message: str) -> None:
    bad = _good()
    mutate(bad)
    path = _file(tmp_path, [_good(), _good(), bad])
    with pytest.raises(DataValidationError, match=rf"^{path}:3: .*{message}") as info:
        load_traces(path)
    assert info.value.line == 3


def test_malformed_json_names_line(tmp_path: Path) -> None:
    path = _file(tmp_path, [_good(), '{"messages": [', _good()])
    with pytest.raises(DataValidationError, match=rf"^{path}:2: malformed JSON"):
        load_traces(path)


def test_skip_invalid_counts_records(tmp_path: Path) -> None:
    bad = _good()
    _bad_unknown_role(bad)
    path = _file(tmp_path, [_good(), "not json", bad, _good()])
    result = load_traces(path, skip_invalid=True)
    assert len(result.traces) == 2
    assert [r.line for r in result.invalid] == [2, 3]
    assert "unknown role" in result.invalid[1].reason


def test_empty_and_missing(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        load_traces(empty)
    with pytest.raises(DataError, match=r"empty \(1 invalid records skipped\)"):
        load_traces(_file(tmp_path, ["[1]"]), skip_invalid=True)
    with pytest.raises(NotFoundError):
        load_traces(tmp_path / "missing.jsonl")


def test_hf_directory_without_datasets_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    try:
        import datasets  # noqa: F401
    except ModuleNotFoundError:
        from privacy_finetuner.errors import MissingDependencyError

        with pytest.raises(MissingDependencyError, match="pip install"):
            load_traces(tmp_path, format="hf")
    else:  # pragma: no cover - datasets installed
        pytest.skip("datasets is installed")
