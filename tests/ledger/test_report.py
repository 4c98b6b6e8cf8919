"""The monthly privacy audit report: per data set budget use, jobs, refusals; Markdown + JSON."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from privacy_finetuner.accounting import DpSegment
from privacy_finetuner.cli.main import app
from privacy_finetuner.errors import BudgetExceededError, ConfigError
from privacy_finetuner.ledger import Database, Ledger, build_audit_report, parse_since
from privacy_finetuner.service.migrate import upgrade_database

SEG = DpSegment(noise_multiplier=1.0, sample_rate=0.01, steps=20)


def test_parse_since() -> None:
    now = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)
    assert parse_since("30d", now=now) == now - dt.timedelta(days=30)
    assert parse_since("12h", now=now) == now - dt.timedelta(hours=12)
    assert parse_since("2026-11-01").day == 1
    with pytest.raises(ConfigError):
        parse_since("last month")


def test_report_lists_budget_jobs_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    db = Database(url)
    upgrade_database(db)
    ledger = Ledger(db)
    ds = ledger.register_dataset(
        tenant="acme", name="support-chats", budget_epsilon=0.6, budget_delta=1e-5
    )
    job = ledger.submit_job(
        dataset_id=ds.id,
        tenant="acme",
        planned=[SEG],
        config={},
        clip_norm=1.0,
        delta=1e-5,
        created_by="key1",
    )
    for _ in range(20):
        ledger.charge(job.id, DpSegment(noise_multiplier=1.0, sample_rate=0.01, steps=1))
    ledger.finish_job(job.id, state="succeeded")
    with pytest.raises(BudgetExceededError):
        ledger.submit_job(
            dataset_id=ds.id,
            tenant="acme",
            planned=[SEG] * 5,
            config={},
            clip_norm=1.0,
            delta=1e-5,
            created_by="key2",
        )
    report = build_audit_report(db, since=parse_since("30d"))
    (entry,) = report["datasets"]
    assert report["ledger_verified"] is True
    assert entry["budget_epsilon"] == 0.6
    assert entry["epsilon_spent_in_period"] == pytest.approx(ledger.spent_epsilon(ds.id))
    assert [j["steps_charged"] for j in entry["jobs"]] == [20]
    assert len(entry["refusals"]) == 1 and entry["refusals"][0]["actor"] == "key2"

    monkeypatch.setenv("DATABASE_URL", url)
    result = CliRunner().invoke(
        app, ["report", "ledger", "--since", "30d", "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    md = next((tmp_path / "out").glob("privacy-audit-*.md")).read_text()
    js = json.loads(next((tmp_path / "out").glob("privacy-audit-*.json")).read_text())
    assert "support-chats" in md and "Refusals" in md and "verified" in md
    assert js["datasets"][0]["name"] == "support-chats"
