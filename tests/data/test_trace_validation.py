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
        (_bad_unknown_role, r"messages\[1\].role: unknown_role"),
        (_bad_arguments, r"messages\[2\].tool_calls\[0\].function.arguments: invalid_json"),
        (_bad_tool_id, r"messages\[3\].tool_call_id: unmatched_tool_call_id"),
        (_bad_no_assistant, "no_assistant"),
        (_bad_messages, "messages: missing_field"),
        (_bad_key, "unknown_key"),
        (_bad_no_name, r"function.name: missing_field"),
        (_bad_tool_without_id, r"messages\[3\].tool_call_id: missing_field"),
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
    with pytest.raises(DataValidationError, match=rf"^{path}:2: malformed_json"):
        load_traces(path)


def test_skip_invalid_counts_records(tmp_path: Path) -> None:
    bad = _good()
    _bad_unknown_role(bad)
    path = _file(tmp_path, [_good(), "not json", bad, _good()])
    result = load_traces(path, skip_invalid=True)
    assert len(result.traces) == 2
    assert [r.line for r in result.invalid] == [2, 3]
    assert result.invalid[1].code == "unknown_role"
    assert result.invalid[1].field == "messages[1].role"


_EMAIL = "jane.private@example.net"
_NAME_SSN = "JohnSmith078051120"
_CARD = "4111111111111111"


def _leaky_records() -> list[Any]:
    """Invalid records whose *values* (not their structure) hold PII."""
    key = _good()
    key["messages"][1][_EMAIL] = "x"  # an e-mail as an unknown message key
    top = _good()
    top[f"contact {_EMAIL}"] = 1  # and as an unknown top-level key
    role = _good()
    role["messages"][1]["role"] = f"{_NAME_SSN} SSN 078-05-1120"  # a name + SSN as a role
    call = _good()
    call["messages"][3]["tool_call_id"] = _CARD  # a card number as an unanswered call id
    call_type = _good()
    call_type["messages"][2]["tool_calls"][0]["id"] = {_CARD: _EMAIL}
    args = _good()
    args["messages"][2]["tool_calls"][0]["function"]["arguments"] = '{"card": ' + _CARD + "x}"
    sharegpt = {"conversations": [{"from": _EMAIL, "value": "hi"}]}
    anthropic = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": _CARD, "text": "x"}]},
        ],
        "system": "s",
    }
    return [key, top, role, call, call_type, args, sharegpt, anthropic, '{"a": ' + _CARD + "x"]


def test_invalid_reasons_never_quote_record_values(tmp_path: Path) -> None:
    """Issue 14, finding 2: reasons carry file, line, a code and schema field names only."""
    path = _file(tmp_path, [_good(), *_leaky_records()])
    result = load_traces(path, skip_invalid=True)
    assert len(result.traces) == 1 and len(result.invalid) == 9
    dumped = json.dumps([r.to_dict() for r in result.invalid])
    for secret in (_EMAIL, _NAME_SSN, "078-05-1120", _CARD, "1111"):
        assert secret not in dumped
    codes = [r.code for r in result.invalid]
    assert codes == [
        "unknown_key", "unknown_key", "unknown_role", "unmatched_tool_call_id", "wrong_type",
        "invalid_json", "unknown_role", "unsupported_content", "malformed_json",
    ]  # fmt: skip
    assert [r.line for r in result.invalid] == list(range(2, 11))
    # The same records without --skip-invalid: the raised error is value-free as well.
    for n, record in enumerate(_leaky_records()):
        single = _file(tmp_path, [record])
        with pytest.raises(DataValidationError) as info:
            load_traces(single)
        message = str(info.value)
        assert message.startswith(f"{single}:1: ")
        assert not any(s in message for s in (_EMAIL, _NAME_SSN, "078-05-1120", _CARD)), n


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
