"""Alembic migrations shipped inside the package: ``privacy-finetuner db upgrade`` and startup.

Concurrent upgrades (several server workers starting at once) are serialised: PostgreSQL takes a
transaction-scoped advisory lock, SQLite a ``BEGIN IMMEDIATE`` write lock, before Alembic reads
the current revision.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from privacy_finetuner.ledger.db import Database

__all__ = ["VERSION_TABLE", "current_revision", "head_revision", "upgrade_database"]

VERSION_TABLE = "pf_alembic_version"
_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_LOCK_ID = 0x5046_4C44  # "PFLD"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def head_revision() -> str:
    """The newest revision shipped with this version of the package."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships a revision
        raise RuntimeError("no Alembic revision shipped")
    return head


def current_revision(db: Database) -> str | None:
    """The revision the database is at (None when never migrated)."""
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


def upgrade_database(db: Database, revision: str = "head") -> str | None:
    """Bring the schema to ``revision`` (default: head) and return the revision reached."""
    cfg = _config()
    with db.write_engine.begin() as conn:
        if db.is_postgres:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK_ID})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return current_revision(db)
