"""Service commands: ``serve``, ``worker``, ``db upgrade``, ``ledger verify``, ``report ledger``,
``keys create|list|revoke``.

All read DATABASE_URL / REDIS_URL / … from the environment (see ``docs/service.md``); FastAPI,
SQLAlchemy and RQ are imported inside the commands.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from privacy_finetuner.cli._output import console, print_json

if TYPE_CHECKING:
    from privacy_finetuner.ledger.db import Database
    from privacy_finetuner.service.settings import Settings

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
ledger_app = typer.Typer(help="The privacy-budget ledger.", no_args_is_help=True)
report_app = typer.Typer(help="Reports.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)


def _settings() -> Settings:
    from privacy_finetuner.service.settings import Settings

    return Settings()


def _db(settings: Settings | None = None) -> Database:
    from privacy_finetuner.ledger.db import Database

    settings = settings or _settings()
    return Database(settings.database_url, schema=settings.database_schema)


def _migrated_db() -> Database:
    from privacy_finetuner.service.migrate import upgrade_database

    db = _db()
    upgrade_database(db)
    return db


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Run the HTTP service (uvicorn); migrates the database first."""
    import uvicorn

    from privacy_finetuner.service.logs import configure_logging, uvicorn_log_config

    settings = _settings()
    configure_logging(settings.log_level)
    _migrated_db().dispose()
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # aggregate request metrics over the worker processes (prometheus-client multiprocess)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="pf-metrics-")
    uvicorn.run(
        "privacy_finetuner.service.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_level=settings.log_level.lower(),
        log_config=uvicorn_log_config(settings.log_level),
    )


def worker(
    burst: Annotated[bool, typer.Option(help="Exit when the queue is empty.")] = False,
    name: Annotated[str | None, typer.Option(help="Worker name (default: host + pid).")] = None,
) -> None:
    """Run an RQ worker for training jobs (needs REDIS_URL); also reaps lost jobs."""
    import redis
    from rq import Queue, Worker

    from privacy_finetuner.errors import ConfigError
    from privacy_finetuner.service.logs import configure_logging
    from privacy_finetuner.service.runner import RQRunner

    settings = _settings()
    if not settings.redis_url:
        raise ConfigError("privacy-finetuner worker needs REDIS_URL")
    configure_logging(settings.log_level)
    _migrated_db().dispose()
    runner = RQRunner(settings)
    runner.start()  # the reaper thread
    connection = redis.Redis.from_url(settings.redis_url)
    queue = Queue(settings.queue_name, connection=connection)
    try:
        Worker([queue], connection=connection, name=name).work(
            burst=burst, logging_level=settings.log_level
        )
    finally:
        runner.shutdown()


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Apply the Alembic migrations (SQLite file by default, DATABASE_URL otherwise)."""
    from privacy_finetuner.service.migrate import upgrade_database

    db = _db()
    reached = upgrade_database(db, revision)
    console.print(f"database at revision {reached}")


@db_app.command("current")
def db_current() -> None:
    """Print the revision the database is at."""
    from privacy_finetuner.service.migrate import current_revision, head_revision

    console.print(f"current {current_revision(_db())}, head {head_revision()}")


@ledger_app.command("verify")
def ledger_verify(
    dataset: Annotated[str | None, typer.Option(help="Only this data set id.")] = None,
    anchors: Annotated[
        Path | None,
        typer.Option(help="An earlier audit report (.json) whose chain heads must still match."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-walk every hash chain; exit 1 if any entry was edited, deleted or reordered."""
    import json

    from privacy_finetuner.errors import ConfigError
    from privacy_finetuner.ledger.verify import anchors_from_report, verify_ledger

    pinned = None
    if anchors is not None:
        try:
            pinned = anchors_from_report(json.loads(anchors.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{anchors}: not an audit report JSON") from exc
    result = verify_ledger(_migrated_db(), dataset_id=dataset, anchors=pinned)
    if as_json:
        print_json(result.to_dict())
    else:
        for problem in result.problems:
            console.print(f"[red]✗[/] {problem}", highlight=False)
        verdict = "[green]intact[/]" if result.ok else "[bold red]BROKEN[/]"
        console.print(f"ledger {verdict}: {result.datasets} data sets, {result.entries} entries")
    if not result.ok:
        raise typer.Exit(1)


@report_app.command("ledger")
def report_ledger(
    since: Annotated[str, typer.Option(help="Period start: 30d, 12h, 2w or an ISO date.")] = "30d",
    out: Annotated[Path, typer.Option(help="Directory for the .md and .json files.")] = Path(
        "reports"
    ),
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
) -> None:
    """Write the monthly privacy audit report (budget use per data set, jobs, refusals)."""
    from privacy_finetuner.ledger.report import (
        build_audit_report,
        parse_since,
        write_audit_report,
    )

    report = build_audit_report(_migrated_db(), since=parse_since(since), tenant=tenant)
    md, js = write_audit_report(report, out)
    console.print(f"wrote {md} and {js}")
    if not report["ledger_verified"]:
        raise typer.Exit(1)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant the key acts for.")],
    scopes: Annotated[str, typer.Option(help="Comma list of admin, submit, read, guard.")],
    name: Annotated[str, typer.Option(help="A label for humans.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Create an API key; it is printed once and stored only as a hash."""
    from privacy_finetuner.service.audit import record_audit
    from privacy_finetuner.service.security import KeyStore

    db = _migrated_db()
    key, row = KeyStore(db).create(tenant=tenant, scopes=scopes, name=name)
    record_audit(
        db,
        actor="cli",
        tenant=tenant,
        action="key.create",
        resource=row.id,
        outcome="ok",
        detail={"scopes": row.scopes, "name": name},
    )
    if as_json:
        print_json({"id": row.id, "tenant": row.tenant, "scopes": row.scopes, "key": key})
    else:
        console.print(f"key id {row.id} (tenant {row.tenant}, scopes {row.scopes}):")
        typer.echo(key)


@keys_app.command("list")
def keys_list(tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None) -> None:
    """List keys (ids, tenants, scopes; never secrets)."""
    from privacy_finetuner.service.security import KeyStore

    for row in KeyStore(_migrated_db()).list(tenant=tenant):
        state = "revoked" if row.revoked_at else "active"
        console.print(f"{row.id}  {row.tenant}  {row.scopes}  {state}  {row.name}", highlight=False)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="Key id (not the secret).")]) -> None:
    """Revoke a key (servers honour it within PF_KEY_CACHE_TTL seconds)."""
    from privacy_finetuner.service.audit import record_audit
    from privacy_finetuner.service.security import KeyStore

    db = _migrated_db()
    row = KeyStore(db).revoke(key_id)
    record_audit(
        db, actor="cli", tenant=row.tenant, action="key.revoke", resource=key_id, outcome="ok"
    )
    console.print(f"revoked {key_id}")


def register(app: typer.Typer) -> None:
    """Attach the service commands to the root app."""
    app.command("serve")(serve)
    app.command("worker")(worker)
    app.add_typer(db_app, name="db")
    app.add_typer(ledger_app, name="ledger")
    app.add_typer(report_app, name="report")
    app.add_typer(keys_app, name="keys")
