"""The compliance pack from a fake run directory: content, missing evidence, CLI."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from privacy_finetuner.audit.compliance import (
    SAFE_HARBOR,
    build_compliance,
    write_compliance,
)
from privacy_finetuner.cli.main import main
from privacy_finetuner.errors import NotFoundError

REPORT = {
    "status": "completed",
    "privacy": {
        "epsilon": 7.98,
        "delta": 1e-5,
        "epsilon_valid": True,
        "accountant": "pld",
        "privacy_unit": "user",
        "noise_multiplier": 0.93,
        "max_grad_norm": 1.0,
        "sample_rate": 0.05,
        "steps": 600,
        "secure_mode": True,
    },
    "data": {
        "source": "traces.jsonl",
        "traces": 2000,
        "users": 570,
        "train_examples": 1800,
        "validation_examples": 200,
        "invalid_records": 3,
    },
    "guard": {
        "enabled": True,
        "applied": True,
        "strategy": "redact",
        "sensitivity": "high",
        "counts": {"EMAIL": 120, "PERSON": 340, "US_SSN": 4, "IBAN": 17, "CREDIT_CARD": 9},
        "note": None,
    },
    "metrics": {"final": {"loss": 1.23, "tool_call_exact_match": 0.71}},
}
AUDIT = {
    "epsilon_lower": 0.42,
    "claimed_epsilon": 7.98,
    "violation": False,
    "one_run": {"confidence": 0.95},
    "exposure": {"median_bits": 1.1},
    "mia": [{"attack": "loss threshold", "auc": 0.51}],
}
NOW = datetime(2026, 11, 27, tzinfo=timezone.utc)


def _full_run(root: Path) -> Path:
    run = root / "run"
    run.mkdir()
    (run / "privacy_report.json").write_text(json.dumps(REPORT), encoding="utf-8")
    (run / "audit.json").write_text(json.dumps(AUDIT), encoding="utf-8")
    (run / "status.json").write_text('{"state": "completed"}', encoding="utf-8")
    (run / "config.yaml").write_text("guard:\n  entities: null\n", encoding="utf-8")
    entries = [{"kind": "charge", "epsilon": 7.98, "entry_hash": "ab" * 32}]
    (run / "ledger_entries.json").write_text(json.dumps(entries), encoding="utf-8")
    return run


def test_full_run_maps_evidence_to_all_frameworks(tmp_path: Path) -> None:
    report = build_compliance(_full_run(tmp_path), now=NOW)
    assert report.missing == []
    md = report.to_markdown()
    for needle in (
        "Art. 5", "Art. 25", "Art. 32", "Art. 35", "Art. 89", "Safe Harbor", "expert determination",
        "Art. 10", "Art. 12", "Art. 15", "not legal advice", "ε = 7.98", "δ = 1e-05",
        "per user", "one-run audit lower bound ε ≥ 0.42 at 95% confidence", "490 identifiers replaced",
        "1 ledger entries", "PERSON 340", "US_SSN 4",
    ):  # fmt: skip
        assert needle in md, needle
    assert "biases" in md and "not assessed" in md  # honest about what is not done
    rows = {r.letter: r for r in report.safe_harbor}
    assert len(rows) == 18
    assert rows["A"].coverage == "covered" and rows["A"].replaced == 340
    assert rows["J"].replaced == 26  # IBAN + card numbers
    assert rows["I"].coverage == "not covered" and rows["I"].replaced is None
    html = report.to_html()
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html
    assert html.count("<table>") == 4


def test_safe_harbor_table_names_the_guard_entities() -> None:
    entities = {e for row in SAFE_HARBOR for e in row[2]}
    assert entities <= {
        "PERSON", "EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "UK_NINO", "NATIONAL_ID",
        "IP_ADDRESS", "STREET_ADDRESS", "DATE_OF_BIRTH", "URL_CREDENTIAL", "SECRET",
        "MEDICAL_RECORD_NUMBER",
    }  # fmt: skip
    assert [row[0] for row in SAFE_HARBOR] == [chr(ord("A") + i) for i in range(18)]


def test_empty_run_dir_says_what_is_absent(tmp_path: Path) -> None:
    report = build_compliance(tmp_path, now=NOW)
    assert "privacy_report.json" in report.missing and "audit.json" in report.missing
    md = report.to_markdown()
    assert "Evidence absent" in md and "no privacy_report.json" in md and "no audit.json" in md
    assert all(f.status == "absent" for f in report.sections["GDPR (Regulation (EU) 2016/679)"][:2])


def test_corrupt_files_and_violations_are_reported(tmp_path: Path) -> None:
    run = _full_run(tmp_path)
    (run / "status.json").write_text("{not json", encoding="utf-8")
    (run / "audit.json").write_text(json.dumps({**AUDIT, "violation": True}), encoding="utf-8")
    report = build_compliance(run, now=NOW)
    assert "status.json" in report.missing
    assert any("status.json could not be read" in p for p in report.problems)
    assert any("contradicted by measurement" in p for p in report.problems)
    with pytest.raises(NotFoundError):
        build_compliance(tmp_path / "missing")


def test_guard_disabled_and_entities_restricted(tmp_path: Path) -> None:
    run = _full_run(tmp_path)
    (run / "config.yaml").write_text("guard:\n  entities: [EMAIL]\n", encoding="utf-8")
    report = build_compliance(run, now=NOW)
    rows = {r.letter: r for r in report.safe_harbor}
    assert rows["A"].coverage.startswith("not covered")
    assert rows["F"].coverage == "covered"
    off = {**REPORT, "guard": {"enabled": False, "applied": False, "counts": {}, "note": None}}
    (run / "privacy_report.json").write_text(json.dumps(off), encoding="utf-8")
    md = build_compliance(run, now=NOW).to_markdown()
    assert "context guard not applied" in md


def test_cli_writes_both_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _full_run(tmp_path)
    main(["compliance", str(run)])
    assert (run / "COMPLIANCE.md").is_file() and (run / "compliance.html").is_file()
    from privacy_finetuner.cli.main import app

    if any(g.name == "report" for g in app.registered_groups):
        out = tmp_path / "out"
        main(["report", "compliance", str(run), "--out", str(out)])
        assert (out / "COMPLIANCE.md").is_file()
    md, html = write_compliance(tmp_path / "run")
    assert md.name == "COMPLIANCE.md" and html.name == "compliance.html"
    with pytest.raises(SystemExit) as exc:
        main(["compliance", str(tmp_path / "nope")])
    assert exc.value.code == 2
    capsys.readouterr()
