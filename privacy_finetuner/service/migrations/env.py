"""Alembic environment: runs on a connection handed in by ``privacy_finetuner.service.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from privacy_finetuner.ledger.models import Base
from privacy_finetuner.service.migrate import VERSION_TABLE

config = context.config
connection = config.attributes.get("connection")


def _run(conn: object) -> None:
    context.configure(
        connection=conn,  # type: ignore[arg-type]
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:  # plain ``alembic`` CLI use with sqlalchemy.url set
    url = config.get_main_option("sqlalchemy.url") or "sqlite:///privacy-finetuner.db"
    with create_engine(url).begin() as conn:
        _run(conn)
