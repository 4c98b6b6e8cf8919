"""Fixtures for ledger tests: a migrated SQLite file, and PostgreSQL in a throw-away schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from privacy_finetuner.ledger import Database, Ledger
from privacy_finetuner.service.migrate import upgrade_database
from privacy_finetuner.service.testing import require_service, unique_name


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'ledger.db'}")
    upgrade_database(db)
    yield db
    db.dispose()


@pytest.fixture
def pg_db() -> Iterator[Database]:
    url = require_service("TEST_POSTGRES_URL")
    db = Database(url, schema=unique_name("pf_ledger"))
    upgrade_database(db)
    yield db
    db.drop_schema()
    db.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest) -> Database:
    name = "sqlite_db" if request.param == "sqlite" else "pg_db"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


@pytest.fixture
def ledger(sqlite_db: Database) -> Ledger:
    return Ledger(sqlite_db)


@pytest.fixture
def any_ledger(db: Database) -> Ledger:
    """The ledger on SQLite and on PostgreSQL."""
    return Ledger(db)
