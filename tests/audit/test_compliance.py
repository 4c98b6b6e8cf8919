"""The compliance pack on a real tiny run directory: what the trainer, the audit and the ledger's
export actually write, mapped to the three frameworks; missing, corrupt and contradicting evidence.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from privacy_finetuner.audit.compliance import SAFE_HARBOR, build_compliance, write_compliance
from privacy_finetuner.cli.main import main
from privacy_finetuner.errors import NotFoundError
from privacy_finetuner.jobs import RunStatus

from .conftest import TinyRun

NOW = datetime(2026, 11, 27, tzinfo=timezone.utc)
GDPR = "GDPR (Regulation (EU) 2016/679)"
HIPAA = "HIPAA Privacy Rule (45 CFR 164.514 de-identification)"


def _edit_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data), encoding="utf-8")


def test_a_real_run_maps_its_evidence_to_all_frameworks(tiny_run_source: TinyRun) -> None:
    run = tiny_run_source
    report = build_compliance(run.run_dir, now=NOW)
    assert report.missing == [] and report.problems == []
    assert report.run_status is RunStatus.COMPLETED and report.run_finished
    md = report.to_markdown()
    for needle in (
        "Art. 5", "Art. 25", "Art. 32", "Art. 35", "Art. 89", "Safe Harbor", "expert determination",
        "Art. 10", "Art. 12", "Art. 15", "not legal advice", "per example",
        f"ε = {run.epsilon:.4g}", f"σ = {run.noise_multiplier:.4g}", f"{run.steps} steps",
        f"one-run audit lower bound ε ≥ {run.epsilon_lower:.4g} at 95% confidence",
        "context guard applied before tokenisation", "secure_mode on",
        # the ledger's own export: entry count and the chain head the ledger stores
        f"{run.ledger_entries} ledger entries exported in ledger_entries.json",
        f"chain head {run.chain_head[:16]}",
    ):  # fmt: skip
        assert needle in md, needle
    assert "None" not in md and "unknown" not in md  # every stated value came from the run
    assert "biases" in md and "not assessed" in md  # honest about what is not done
    gdpr = {f.requirement.split()[1]: f for f in report.sections[GDPR]}
    assert gdpr["5(2)"].status == "evidence" and "ledger_entries.json" in gdpr["5(2)"].statement
    assert gdpr["32"].status == "evidence"  # secure mode on and an audit without violation
    html = report.to_html()
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html
    assert html.count("<table>") == 4


def test_safe_harbor_rows_count_what_the_guard_replaced(tiny_run_source: TinyRun) -> None:
    run = tiny_run_source.run_dir
    internal = json.loads((run / "internal_diagnostics.json").read_text(encoding="utf-8"))
    counts = internal["guard"]["counts"]  # the operator's exact counts, as the trainer wrote them
    assert counts.get("PERSON", 0) > 0  # the synthetic traces hold names
    rows = {r.letter: r for r in build_compliance(run, now=NOW).safe_harbor}
    assert len(rows) == 18
    assert rows["A"].coverage == "covered" and rows["A"].entities == ("PERSON",)
    assert rows["A"].replaced == counts["PERSON"]
    assert rows["J"].replaced == counts.get("IBAN", 0) + counts.get("CREDIT_CARD", 0)
    assert rows["I"].coverage == "not covered" and rows["I"].replaced is None


def test_without_the_operator_diagnostics_no_count_is_invented(tiny_run: Path) -> None:
    (tiny_run / "internal_diagnostics.json").unlink()  # a copy of the released files only
    report = build_compliance(tiny_run, now=NOW)
    assert all(r.replaced is None for r in report.safe_harbor)
    assert "per-type counts are internal diagnostics, not released" in report.to_markdown()


def test_safe_harbor_table_names_the_guard_entities() -> None:
    from privacy_finetuner.guard import ENTITY_TYPES

    assert {e for row in SAFE_HARBOR for e in row[2]} <= set(ENTITY_TYPES)
    assert [row[0] for row in SAFE_HARBOR] == [chr(ord("A") + i) for i in range(18)]


def test_empty_run_dir_says_what_is_absent(tmp_path: Path) -> None:
    report = build_compliance(tmp_path, now=NOW)
    assert "privacy_report.json" in report.missing and "audit.json" in report.missing
    assert report.run_status is None and not report.run_finished
    md = report.to_markdown()
    assert "Evidence absent" in md and "no privacy_report.json" in md and "no audit.json" in md
    assert all(f.status == "absent" for f in report.sections[GDPR][:2])


def test_corrupt_files_and_violations_are_reported(tiny_run: Path, tmp_path: Path) -> None:
    (tiny_run / "status.json").write_text("{not json", encoding="utf-8")
    _edit_json(tiny_run / "audit.json", violation=True)
    report = build_compliance(tiny_run, now=NOW)
    assert "status.json" in report.missing
    assert any("status.json could not be read" in p for p in report.problems)
    assert any("contradicted by measurement" in p for p in report.problems)
    risks = [f for f in report.sections[GDPR] if "risks to data subjects" in f.requirement]
    assert risks[0].status == "partial" and "VIOLATION" in risks[0].statement
    with pytest.raises(NotFoundError):
        build_compliance(tmp_path / "missing")


def test_an_unfinished_run_is_flagged(tiny_run: Path) -> None:
    _edit_json(tiny_run / "status.json", state="interrupted")
    report = build_compliance(tiny_run, now=NOW)
    assert report.run_status is RunStatus.INTERRUPTED and not report.run_finished
    assert any("run is interrupted, not finished" in p for p in report.problems)
    _edit_json(tiny_run / "status.json", state="exploded")
    assert any("unknown state 'exploded'" in p for p in build_compliance(tiny_run).problems)


def test_guard_disabled_and_entities_restricted(tiny_run: Path) -> None:
    config_file = tiny_run / "config.yaml"
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    config["guard"]["entities"] = ["EMAIL"]
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    rows = {r.letter: r for r in build_compliance(tiny_run, now=NOW).safe_harbor}
    assert rows["A"].coverage.startswith("not covered") and rows["A"].entities == ()
    assert rows["F"].coverage == "covered"
    _edit_json(tiny_run / "privacy_report.json", guard={"enabled": False, "applied": False})
    report = build_compliance(tiny_run, now=NOW)
    assert "context guard not applied (disabled)" in report.to_markdown()
    assert report.sections[GDPR][0].status == "partial"


def test_cli_writes_both_files(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["compliance", str(tiny_run)])
    assert (tiny_run / "COMPLIANCE.md").is_file() and (tiny_run / "compliance.html").is_file()
    out = tmp_path / "out"
    main(["report", "compliance", str(tiny_run), "--out", str(out)])
    assert (out / "COMPLIANCE.md").is_file()
    md, html = write_compliance(tiny_run, tmp_path / "again")
    assert md.read_text(encoding="utf-8").startswith("# Compliance evidence pack")
    assert html.name == "compliance.html"
    with pytest.raises(SystemExit) as exc:
        main(["compliance", str(tmp_path / "nope")])
    assert exc.value.code == 2
    capsys.readouterr()
