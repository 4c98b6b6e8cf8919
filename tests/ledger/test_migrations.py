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


def test_models_match_the_migrations(db: Database) -> None:
    """No drift between the ORM models and the shipped migrations (alembic autogenerate diff)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from privacy_finetuner.ledger import Base
    from privacy_finetuner.service.migrate import VERSION_TABLE

    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "compare_type": True}
        )
        assert compare_metadata(ctx, Base.metadata) == []
