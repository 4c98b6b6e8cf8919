"""Engines and sessions: a SQLite file by default, PostgreSQL (psycopg 3) via a URL.

SQLite serialises writers: every *write* transaction starts with ``BEGIN IMMEDIATE`` (through
:func:`write_session`), so two budget checks can never interleave. PostgreSQL writers lock the
data set row with ``SELECT … FOR UPDATE`` instead (see :mod:`privacy_finetuner.ledger.store`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from privacy_finetuner.errors import ConfigError

__all__ = [
    "DEFAULT_DATABASE_URL",
    "Database",
    "normalise_url",
]

DEFAULT_DATABASE_URL = "sqlite:///privacy-finetuner.db"
_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def normalise_url(url: str) -> str:
    """Map ``postgres://`` / ``postgresql://`` to the psycopg 3 driver; leave others as given."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _create_private_file(path: Path) -> None:
    """Create the SQLite file (and its -wal/-shm, which SQLite gives the same mode) as 0600.

    The ledger, API key digests and job configs live in it; SQLite would create it 0644.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's "begin" event decide
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("pf_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """One engine plus session factories for reads and (serialised) writes.

    Args:
        url: SQLAlchemy URL; ``postgresql://`` is mapped to psycopg 3.
        schema: PostgreSQL schema to use (``search_path``); created if missing. Ignored by SQLite.
        pool_size: connections kept per process (PostgreSQL).
    """

    def __init__(
        self, url: str = DEFAULT_DATABASE_URL, *, schema: str | None = None, pool_size: int = 10
    ) -> None:
        self.url = normalise_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        self.schema = schema
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                _create_private_file(Path(parsed.database).expanduser())
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        elif self.dialect == "postgresql":
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = pool_size * 2
            if schema:
                if not _SCHEMA_RE.match(schema):
                    raise ConfigError(f"invalid database schema name {schema!r}")
                kwargs["connect_args"] = {"options": f"-csearch_path={schema}"}
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            _sqlite_setup(self.engine)
        if self.dialect == "postgresql" and schema:
            with self.engine.begin() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        self._write_engine = self.engine.execution_options(pf_write=True)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self._write_engine, expire_on_commit=False)

    @property
    def write_engine(self) -> Engine:
        """The engine whose transactions take the SQLite write lock up front."""
        return self._write_engine

    @property
    def is_postgres(self) -> bool:
        """True when row locks (``FOR UPDATE``) are available."""
        return self.dialect == "postgresql"

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for queries (no write lock on SQLite)."""
        with self._read() as session:
            yield session

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on error.

        On SQLite it starts with ``BEGIN IMMEDIATE``, which serialises writers across processes.
        """
        with self._write() as session, session.begin():
            yield session

    def ping(self) -> None:
        """Run ``SELECT 1``; raises when the database is unreachable."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        """Close pooled connections (call in forked children and at shutdown)."""
        self.engine.dispose()

    def drop_schema(self) -> None:
        """Drop this database's PostgreSQL schema and everything in it (tests only)."""
        if self.is_postgres and self.schema:
            with self.engine.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
