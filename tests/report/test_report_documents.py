from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from privacy_finetuner.report import render_html, render_model_card, write_documents


def _report() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "version": "0.1.0",
        "status": "completed",
        "privacy": {
            "epsilon": 7.9, "delta": 1e-5, "target_epsilon": 8.0, "epsilon_valid": True,
            "accountant": "pld", "privacy_unit": "user", "sampling": "poisson",
            "sample_rate": 0.05, "expected_batch_size": 20.0, "noise_multiplier": 0.9,
            "max_grad_norm": 1.0, "steps": 100, "planned_steps": 100, "num_units": 400,
            "max_examples_per_user": 4, "secure_mode": False, "history": [],
        },
        "data": {
            "source": "traces.jsonl", "traces": 1000, "invalid_records": 2, "invalid": [],
            "users": 400, "train_examples": 900, "validation_examples": 100, "max_length": 256,
            "truncated": 3, "dropped_no_targets": 0, "canaries": 0,
        },
        "guard": {"enabled": True, "applied": True, "strategy": "redact",
                  "counts": {"EMAIL": 12, "PERSON": 3}, "note": None},
        "model": {"base": "tiny", "method": "full", "trainable_parameters": 10,
                  "total_parameters": 10},
        "metrics": {
            "train_loss": [[1, 5.0], [2, 4.0]],
            "validation_loss": [[0, 6.0], [2, 4.5]],
            "epsilon": [[0, 0.0], [2, 7.9]],
            "final": {"loss": 4.5, "perplexity": 90.0, "tool_call_exact_match": 0.5,
                      "tool_call_prompts": 10},
        },
        "warnings": ["secure_mode is off"],
    }  # fmt: skip


def test_model_card_has_the_dp_statement() -> None:
    card = render_model_card(_report())
    for needle in (
        "(7.9, 1e-05)-differential privacy at the user level",
        "Poisson, rate q = 0.05",
        "| Clip norm C | 1 |",
        "| Noise multiplier σ | 0.9 |",
        "| Steps | 100 |",
        "| Data set size (users) | 400 |",
        "| ε valid | yes |",
        "PLD",
        "2 invalid records skipped",
        "EMAIL 12",
        "How to DP-fy ML",
    ):
        assert needle in card, needle


def test_html_is_standalone_with_svg(tmp_path: Path) -> None:
    html = render_html(_report())
    assert html.count("<svg") == 3
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<script" not in html
    path = write_documents(tmp_path, _report())
    assert json.loads(path.read_text())["privacy"]["epsilon"] == 7.9
    assert (tmp_path / "report.html").is_file() and (tmp_path / "MODEL_CARD.md").is_file()
