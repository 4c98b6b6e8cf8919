"""Alembic migrations on SQLite and PostgreSQL: upgrade, idempotence, downgrade, re-upgrade."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect

from privacy_finetuner.ledger import Database
from privacy_finetuner.service.migrate import (
    _config,
    current_revision,
    head_revision,
    upgrade_database,
)

TABLES = {"pf_datasets", "pf_ledger_entries", "pf_jobs", "pf_api_keys", "pf_audit_events"}


def test_upgrade_downgrade_upgrade(db: Database) -> None:
    assert current_revision(db) == head_revision()
    assert upgrade_database(db) == head_revision()  # idempotent
    assert set(inspect(db.engine).get_table_names()) >= TABLES
    cfg = _config()
    with db.write_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert not TABLES & set(inspect(db.engine).get_table_names())
    assert upgrade_database(db) == head_revision()
    assert set(inspect(db.engine).get_table_names()) >= TABLES
