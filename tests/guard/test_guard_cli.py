"""CLI: guard protect / scan on plain text and JSONL, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from privacy_finetuner.cli.guard import register

app = typer.Typer()
register(app)


@app.callback()
def _root() -> None:
    """Test root."""


runner = CliRunner()


def test_protect_plain_text(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("Hi, I am Jane Miller, mail jane@example.com\nno pii here\n")
    result = runner.invoke(app, ["guard", "protect", str(source)])
    assert result.exit_code == 0, result.output
    assert result.output == "Hi, I am [PERSON], mail [EMAIL]\nno pii here\n"


def test_protect_jsonl_passes_other_fields_through() -> None:
    lines = [
        {"id": 1, "body": "call +44 20 7946 0958", "meta": {"lang": "en"}},
        {"id": 2, "body": [{"role": "user", "content": "mail a@b.com"}]},
    ]
    stdin = "\n".join(json.dumps(line) for line in lines) + "\n"
    result = runner.invoke(
        app, ["guard", "protect", "-", "--field", "body", "-s", "mask"], input=stdin
    )
    assert result.exit_code == 0, result.output
    first, second = (json.loads(line) for line in result.output.splitlines())
    assert first == {"id": 1, "body": "call ****0958", "meta": {"lang": "en"}}
    assert second["body"] == [{"role": "user", "content": "mail ****"}]


def test_scan_jsonl_spans_and_table() -> None:
    stdin = json.dumps({"id": "r1", "text": "SSN 078-05-1120"}) + "\n"
    result = runner.invoke(app, ["guard", "scan", "-", "--format", "jsonl"], input=stdin)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "id": "r1",
        "spans": [{"start": 4, "end": 15, "type": "US_SSN", "score": 0.95}],
    }
    table = runner.invoke(app, ["guard", "scan", "-"], input="a@b.com\nc@d.com\n")
    assert table.exit_code == 0 and "EMAIL" in table.output and "2" in table.output
    assert "a@b.com" not in table.output


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{not json\n')
    for args in (["guard", "protect", str(bad)], ["guard", "scan", str(tmp_path / "missing")]):
        proc = subprocess.run(
            [sys.executable, "-m", "privacy_finetuner", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error:") and "Traceback" not in proc.stderr


def _cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Any:
    """The real console entry point in a subprocess (stderr and exit code as a user sees them)."""
    import os

    return subprocess.run(
        [sys.executable, "-m", "privacy_finetuner", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def _trace(name: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": f"My name is {name}, mail me at jane.roe@example.org"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"email": "jr@example.org"}'},
                    }
                ],
            },
        ],
        "user_id": "user-1",
        "meta": {"domain": "support"},
    }


def test_protect_understands_trace_files_without_field(tmp_path: Path) -> None:
    source = tmp_path / "traces.jsonl"
    source.write_text(json.dumps(_trace("Jane Roe")) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["guard", "protect", str(source)])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["user_id"] == "user-1" and record["meta"] == {"domain": "support"}
    assert record["messages"][0]["content"] == "My name is [PERSON], mail me at [EMAIL]"
    arguments = record["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(arguments) == {"email": "[EMAIL]"}


def test_protect_names_both_fields_when_neither_exists() -> None:
    result = runner.invoke(app, ["guard", "protect", "-"], input='{"body": "x"}\n')
    assert result.exit_code != 0
    assert "'text' nor a 'messages'" in str(result.exception) and "--field" in str(result.exception)


def test_bad_line_leaves_no_output_behind(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "mail a@b.com"}\n{"text": "ok"}\n{not json\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    proc = _cli("guard", "protect", str(bad), "--output", str(out))
    assert proc.returncode == 2 and "bad.jsonl:3" in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]  # no temp file left either
    to_stdout = _cli("guard", "protect", str(bad))
    assert to_stdout.returncode == 2 and to_stdout.stdout == ""  # line 1 was not written


def test_output_file_is_written_on_success(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("mail a@b.com\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    result = runner.invoke(app, ["guard", "protect", str(source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == "mail [EMAIL]\n" and result.output == ""


def test_encrypt_then_reveal_round_trip(tmp_path: Path) -> None:
    import base64
    import os

    key = tmp_path / "guard.key"
    key.write_text(base64.b64encode(os.urandom(32)).decode() + "\n", encoding="utf-8")
    source = tmp_path / "traces.jsonl"
    source.write_text(json.dumps(_trace("Jane Roe")) + "\n", encoding="utf-8")
    enc = tmp_path / "enc.jsonl"
    first = runner.invoke(
        app,
        ["guard", "protect", str(source), "-s", "encrypt", "--key-file", str(key), "-o", str(enc)],
    )
    assert first.exit_code == 0, first.output
    assert "jane.roe@example.org" not in enc.read_text() and "[[ENC:EMAIL:" in enc.read_text()
    back = runner.invoke(app, ["guard", "reveal", str(enc), "--key-file", str(key)])
    assert back.exit_code == 0, back.output
    assert json.loads(back.output) == _trace("Jane Roe")
    plain = runner.invoke(
        app, ["guard", "protect", "-", "-s", "encrypt", "--key-file", str(key)], input="a@b.com\n"
    )
    assert (
        runner.invoke(
            app, ["guard", "reveal", "-", "--key-file", str(key)], input=plain.output
        ).output
        == "a@b.com\n"
    )


def test_encrypt_without_key_names_the_flag_before_reading_input() -> None:
    proc = _cli("guard", "protect", "-", "-s", "encrypt", stdin="a@b.com\n",
                env={"PRIVACY_GUARD_KEY": ""})  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert "--key-file" in proc.stderr and "key_file=" not in proc.stderr
    assert "PRIVACY_GUARD_KEY" in proc.stderr
    reveal = _cli("guard", "reveal", "-", stdin="x\n", env={"PRIVACY_GUARD_KEY": ""})
    assert reveal.returncode == 2 and "--key-file" in reveal.stderr


def test_hash_without_key_warns_in_one_line() -> None:
    proc = _cli("guard", "protect", "-", "-s", "hash", stdin="a@b.com\nc@d.com\n",
                env={"PRIVACY_GUARD_KEY": ""})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("[EMAIL_")
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: no guard key configured")
    assert "warnings.warn" not in proc.stderr and ".py:" not in proc.stderr
