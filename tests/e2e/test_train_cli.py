"""The CLI from a user's seat: bad input gives one line and a non-zero exit; a tiny job trains,
evaluates and generates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from privacy_finetuner.cli.main import main

TINY: dict[str, Any] = {
    "data": {"max_length": 96, "validation_split": 0.2},
    "guard": {"enabled": False},
    "model": {"tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                       "intermediate_size": 64, "vocab_size": 400,
                       "tokenizer_corpus_size": 30}},
    "training": {"max_steps": 3, "batch_size": 8, "eval_every": 3, "eval_batches": 1,
                 "eval_tool_calls": 2},
    "privacy": {"noise_multiplier": 1.2, "target_epsilon": 20.0, "max_physical_batch_size": 8},
}  # fmt: skip


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(err: str) -> str:
    """The error line as printed (rich wraps long lines at the terminal width)."""
    return "".join(line.strip("\n") for line in err.splitlines())


def _config(tmp_path: Path, data: Path, **privacy: Any) -> Path:
    job = json.loads(json.dumps(TINY))
    job["data"]["path"] = str(data)
    job["privacy"].update(privacy)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "traces.jsonl"
    main_argv = ["data", "synth", "--n", "60", "--seed", "1", "--canaries", "2", str(path)]
    try:
        main(main_argv)
    except SystemExit as exc:  # pragma: no cover
        assert exc.code == 0
    assert (path.parent / "traces.jsonl.canaries.json").is_file()
    return path


def _bad_file(tmp_path: Path, traces: Path, line: str) -> Path:
    good = traces.read_text().splitlines()[:5]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([*good[:2], line, *good[2:]]) + "\n")
    return path


def _replace_role(traces: Path) -> str:
    record = json.loads(traces.read_text().splitlines()[0])
    record["messages"][1]["role"] = "robot"
    return json.dumps(record)


def _bad_args(traces: Path) -> str:
    record = json.loads(traces.read_text().splitlines()[0])
    record["messages"][2]["tool_calls"][0]["function"]["arguments"] = "{'x': 1"
    return json.dumps(record)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("missing", "data file not found"),
        ("malformed", "bad.jsonl:3: malformed_json"),
        ("role", "bad.jsonl:3: messages[1].role: unknown_role"),
        ("arguments", "bad.jsonl:3: messages[2].tool_calls[0].function.arguments: invalid_json"),
        ("empty", "the data set is empty"),
    ],
)
def test_bad_input_is_one_line(
    tmp_path: Path, traces: Path, capsys: pytest.CaptureFixture[str], kind: str, expected: str
) -> None:
    makers = {
        "missing": lambda: tmp_path / "nope.jsonl",
        "malformed": lambda: _bad_file(tmp_path, traces, '{"messages": ['),
        "role": lambda: _bad_file(tmp_path, traces, _replace_role(traces)),
        "arguments": lambda: _bad_file(tmp_path, traces, _bad_args(traces)),
        "empty": lambda: tmp_path / "empty.jsonl",
    }
    data = makers[kind]()
    if kind == "empty":
        data.write_text("")
    out_dir = tmp_path / "run"
    code, _, err = _run(
        ["train", str(_config(tmp_path, data)), "--output-dir", str(out_dir)], capsys
    )
    assert code == 2
    assert expected in _one_line(err)
    assert "Traceback" not in err and err.count("error:") == 1
    assert not out_dir.exists()


def test_skip_invalid_and_unreachable_epsilon(
    tmp_path: Path, traces: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _bad_file(tmp_path, traces, _replace_role(traces))
    config = _config(tmp_path, data, target_epsilon=0.001)
    out_dir = tmp_path / "run"
    code, _, err = _run(["train", str(config), "--skip-invalid", "--output-dir", str(out_dir)],
                        capsys)  # fmt: skip
    assert code != 0
    assert "target epsilon 0.001 is unreachable" in _one_line(err)
    assert "Traceback" not in err and not out_dir.exists()


def test_train_evaluate_generate(
    tmp_path: Path, traces: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "run"
    config = _config(tmp_path, traces)
    code, out, err = _run(["train", str(config), "--output-dir", str(out_dir), "--json"], capsys)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == "completed" and result["steps"] == 3
    assert 0 < result["epsilon"] <= 20.0
    for name in ("privacy_report.json", "report.html", "MODEL_CARD.md", "tokenizer", "model"):
        assert (out_dir / name).exists(), name
    assert not (out_dir / "RUN_INCOMPLETE").exists()

    code, out, err = _run(["evaluate", str(out_dir), "--data", str(traces), "--max-prompts",
                           "4", "--json"], capsys)  # fmt: skip
    assert code == 0, err
    metrics = json.loads(out.strip().splitlines()[-1])
    assert metrics["loss"] > 0 and metrics["perplexity"] > 1
    assert metrics["tool_call_prompts"] == 4
    assert 0.0 <= metrics["tool_call_exact_match"] <= 1.0

    code, out, err = _run(["generate", str(out_dir), "Where is order ORD-12345?",
                           "--max-new-tokens", "8"], capsys)  # fmt: skip
    assert code == 0, err

    code, _, err = _run(["train", str(config), "--output-dir", str(out_dir)], capsys)
    assert code != 0 and "not empty" in _one_line(err)


def test_train_with_audit_adds_the_empirical_privacy_section(
    tmp_path: Path, traces: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "audited"
    config = _config(tmp_path, traces)
    argv = ["train", str(config), "--output-dir", str(out_dir), "--json", "--audit",
            "--set", "audit.canaries=8", "--set", "audit.repeats=2"]  # fmt: skip
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["audit_violation"] is False
    assert result["audit_epsilon_lower"] >= 0.0
    audit = json.loads((out_dir / "audit.json").read_text(encoding="utf-8"))
    assert audit["canaries"] == 8
    assert "Empirical privacy" in (out_dir / "report.html").read_text(encoding="utf-8")


def test_no_file_of_the_run_holds_a_value_of_an_invalid_record(
    tmp_path: Path, traces: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Finding 2: with --skip-invalid, skipped records are counted in the internal diagnostics
    by line, code and field; no value of theirs (nor an unknown key) is in any run file."""
    good = traces.read_text().splitlines()
    secrets = ["jane.doe@example.com", "078-05-1120", "Jane Roe", "4111111111111111"]
    unknown_key = json.loads(good[0])
    unknown_key["contact_jane.doe@example.com"] = "x"
    bad_role = json.loads(good[1])
    bad_role["messages"][1]["role"] = "Jane Roe 078-05-1120"
    bad_id = json.loads(good[2])
    tool = next(m for m in bad_id["messages"] if m["role"] == "tool")
    tool["tool_call_id"] = "4111111111111111"  # answers no call: invalid
    data = tmp_path / "mixed.jsonl"
    bad = [json.dumps(r) for r in (unknown_key, bad_role, bad_id)]
    data.write_text("\n".join([*good[3:30], *bad, *good[30:]]) + "\n")
    out_dir = tmp_path / "run"
    code, out, err = _run(["train", str(_config(tmp_path, data)), "--skip-invalid",
                           "--output-dir", str(out_dir), "--json"], capsys)  # fmt: skip
    assert code == 0, err
    for path in (p for p in out_dir.rglob("*") if p.is_file()):
        text = path.read_bytes().decode("utf-8", errors="replace")
        for secret in secrets:
            assert secret not in text, (path.name, secret)
    assert not any(secret in out + err for secret in secrets)
    internal = json.loads((out_dir / "internal_diagnostics.json").read_text())
    assert internal["data"]["invalid_records"] == 3
    assert [e["line"] for e in internal["data"]["invalid"]] == [28, 29, 30]
