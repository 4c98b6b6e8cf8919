"""Hash-chain tamper detection: edited, deleted, truncated entries and edited budgets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from privacy_finetuner.accounting import DpSegment
from privacy_finetuner.cli.main import app
from privacy_finetuner.ledger import Database, Ledger, verify_ledger


def _populated(db: Database) -> str:
    ledger = Ledger(db)
    ds = ledger.register_dataset(tenant="t", name="d", budget_epsilon=5, budget_delta=1e-5)
    job = ledger.submit_job(
        dataset_id=ds.id,
        tenant="t",
        config={},
        clip_norm=1.0,
        delta=1e-5,
        planned=[DpSegment(noise_multiplier=1.0, sample_rate=0.01, steps=4)],
    )
    for _ in range(4):
        ledger.charge(job.id, DpSegment(noise_multiplier=1.0, sample_rate=0.01, steps=1))
    ledger.finish_job(job.id, state="succeeded")
    return ds.id  # 1 register + 1 reserve + 4 charges + 1 release = 7 entries


def _exec(db: Database, sql: str, **params: object) -> None:
    with db.engine.begin() as conn:
        conn.execute(text(sql), params)


def test_intact_chain_verifies(db: Database) -> None:
    _populated(db)
    result = verify_ledger(db)
    assert result.ok, result.problems
    assert result.entries == 7 and result.datasets == 1


def test_edited_payload_is_detected(db: Database) -> None:
    ds_id = _populated(db)
    payload = json.dumps({"segment": {"noise_multiplier": 5.0, "sample_rate": 0.01, "steps": 1}})
    _exec(
        db,
        "UPDATE pf_ledger_entries SET payload = :p WHERE dataset_id = :d AND seq = 3",
        p=payload,
        d=ds_id,
    )
    result = verify_ledger(db)
    assert not result.ok
    assert any("#3" in p and "modified" in p for p in result.problems)


def test_deleted_entry_is_detected(sqlite_db: Database) -> None:
    ds_id = _populated(sqlite_db)
    _exec(sqlite_db, "DELETE FROM pf_ledger_entries WHERE dataset_id = :d AND seq = 4", d=ds_id)
    problems = verify_ledger(sqlite_db).problems
    assert any("#4 missing" in p for p in problems)
    assert any("charged steps differ" in p for p in problems)


def test_truncated_tail_is_detected(sqlite_db: Database) -> None:
    ds_id = _populated(sqlite_db)
    _exec(sqlite_db, "DELETE FROM pf_ledger_entries WHERE dataset_id = :d AND seq = 7", d=ds_id)
    problems = verify_ledger(sqlite_db).problems
    assert any("entries deleted" in p for p in problems)


def test_edited_budget_is_detected(sqlite_db: Database) -> None:
    ds_id = _populated(sqlite_db)
    _exec(sqlite_db, "UPDATE pf_datasets SET budget_epsilon = 500 WHERE id = :d", d=ds_id)
    assert any("registration" in p for p in verify_ledger(sqlite_db).problems)


def test_cli_verify_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    db = Database(url)
    from privacy_finetuner.service.migrate import upgrade_database

    upgrade_database(db)
    ds_id = _populated(db)
    runner = CliRunner()
    ok = runner.invoke(app, ["ledger", "verify", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["ok"] is True
    _exec(
        db,
        "UPDATE pf_ledger_entries SET kind = 'charge' WHERE dataset_id = :d AND seq = 2",
        d=ds_id,
    )
    bad = runner.invoke(app, ["ledger", "verify"])
    assert bad.exit_code == 1
    assert "BROKEN" in bad.output


def test_consistent_rewrite_is_caught_by_report_anchors(sqlite_db: Database) -> None:
    """Someone with write access rewrites an entry *and* re-hashes the rest of the chain: only
    the chain heads quoted by an earlier audit report can tell."""
    from sqlalchemy import select

    from privacy_finetuner.ledger import Dataset, LedgerEntry, anchors_from_report
    from privacy_finetuner.ledger.chain import entry_hash
    from privacy_finetuner.ledger.report import build_audit_report, parse_since

    ds_id = _populated(sqlite_db)
    anchors = anchors_from_report(build_audit_report(sqlite_db, since=parse_since("30d")))
    with sqlite_db.write_session() as session:
        entries = session.scalars(
            select(LedgerEntry).where(LedgerEntry.dataset_id == ds_id).order_by(LedgerEntry.seq)
        ).all()
        prev = entries[0].prev_hash
        for e in entries:
            if e.seq == 3:  # drop a charged step to the next-cheapest σ
                e.payload = {"segment": {"noise_multiplier": 50.0, "sample_rate": 0.01, "steps": 1}}
            e.prev_hash = prev
            e.hash = entry_hash(
                prev_hash=prev,
                dataset_id=e.dataset_id,
                seq=e.seq,
                kind=e.kind,
                job_id=e.job_id,
                payload=e.payload,
                created_at=e.created_at,
            )
            prev = e.hash
        ds = session.get(Dataset, ds_id)
        assert ds is not None
        ds.head_hash = prev
    fooled = verify_ledger(sqlite_db).problems
    assert all("modified" not in p and "chain" not in p for p in fooled)
    caught = verify_ledger(sqlite_db, anchors=anchors)
    assert any("history rewritten" in p for p in caught.problems)
