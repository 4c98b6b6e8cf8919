"""``privacy-finetuner data check``: the mask a user will train with, before any budget is spent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from privacy_finetuner.data import generate_traces, write_traces


def test_check_marks_assistant_turns_and_counts_truncation(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from privacy_finetuner.cli.main import app

    data = tmp_path / "t.jsonl"
    traces = generate_traces(12, seed=4).traces
    write_traces(traces, data)
    runner = CliRunner()
    result = runner.invoke(app, ["data", "check", str(data), "--n", "1", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["traces"] == 12 and out["tool_call_format"] == "json"
    assert out["truncated"] == 0 and out["no_target_left"] == 0
    (shown,) = out["shown"]
    first = traces[0]
    call = first.messages[2].tool_calls[0]
    assert f'⟦<tool_call>{{"name": "{call.name}"' in shown
    assert first.messages[1].content in shown  # the user turn is shown ...
    assert "⟦" + first.messages[1].content not in shown  # ... but carries no loss
    marked = "".join(part.split("⟧")[0] for part in shown.split("⟦")[1:])
    assert first.messages[1].content not in marked and first.messages[3].content not in marked
    short = runner.invoke(app, ["data", "check", str(data), "--max-length", "40", "--json"])
    counts = json.loads(short.output)
    assert counts["truncated"] == 12 and counts["no_target_left"] > 0


def test_check_with_a_local_model_directory_and_its_template(tmp_path: Path) -> None:
    """A saved tokenizer whose template is Mistral-style (ids validated, tools before the last
    user turn): the check loads only the tokenizer and reports the probe's findings."""
    pytest.importorskip("transformers")
    from template_fixtures import MISTRAL

    from privacy_finetuner.cli.main import app
    from privacy_finetuner.modeling.tiny import tokenizer_corpus, train_tiny_tokenizer

    tok = train_tiny_tokenizer(tokenizer_corpus(generate_traces(20, seed=1).traces), vocab_size=400)
    tok.chat_template = MISTRAL
    tok.save_pretrained(tmp_path / "mistral-like")
    data = tmp_path / "t.jsonl"
    write_traces(generate_traces(3, seed=2).traces, data)
    result = CliRunner().invoke(
        app,
        [
            "data",
            "check",
            str(data),
            "--model",
            str(tmp_path / "mistral-like"),
            "--n",
            "1",
            "--max-length",
            "4096",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "[TOOL_CALLS]" in result.output and "tool calls as json" in result.output
    assert "mistral-like" in result.output
    assert "3 traces (0 invalid skipped): 0 truncated" in result.output
