"""CLI: guard protect / scan on plain text and JSONL, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
