"""``privacy-finetuner guard protect|scan``: stream text or JSONL through the context guard.

Input is read line by line (bounded memory) from a file or ``-`` (stdin). A stream whose first
non-empty line is a JSON object is JSONL: the text is in ``--field`` (default ``text``; a list of
chat messages there is protected message by message, tool calls included) and every other field
passes through unchanged. Anything else is plain text, one record per line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from privacy_finetuner.cli._output import console
from privacy_finetuner.errors import ConfigError, DataValidationError, NotFoundError

if TYPE_CHECKING:
    from privacy_finetuner.guard import ContextGuard

guard_app = typer.Typer(
    name="guard",
    help="Find and redact, pseudonymise or encrypt PII and secrets in text and JSONL.",
    no_args_is_help=True,
)

InputArg = Annotated[str, typer.Argument(help="Input file (plain text or JSONL), or - for stdin.")]
FieldOpt = Annotated[str, typer.Option("--field", help="JSONL field holding the text.")]
StrategyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--strategy",
        "-s",
        help="redact | mask | hash | encrypt | k_anonymity, or TYPE=strategy (repeatable).",
    ),
]
SensitivityOpt = Annotated[
    str, typer.Option("--sensitivity", help="high (most recall) | medium | low.")
]
EntitiesOpt = Annotated[
    str | None, typer.Option("--entities", help="Comma-separated entity types (default: all).")
]
KeyFileOpt = Annotated[
    Path | None, typer.Option("--key-file", help="Key file for hash/encrypt (else the env var).")
]
KeyEnvOpt = Annotated[
    str, typer.Option("--key-env", help="Environment variable holding the key ring.")
]


def _guard(
    strategies: list[str] | None,
    sensitivity: str,
    entities: str | None,
    key_file: Path | None,
    key_env: str,
) -> ContextGuard:
    from privacy_finetuner.guard import ContextGuard

    wanted = [e.strip().upper() for e in entities.split(",") if e.strip()] if entities else None
    return ContextGuard(
        strategies=strategies or ["redact"],
        entities=wanted,
        sensitivity=sensitivity,
        key_file=key_file,
        key_env=key_env,
    )


@contextmanager
def _open(source: str) -> Iterator[IO[str]]:
    if source == "-":
        yield sys.stdin
        return
    path = Path(source)
    if not path.is_file():
        raise NotFoundError(f"input file not found: {source}")
    with path.open(encoding="utf-8", errors="strict", newline="") as handle:
        yield handle


def _records(source: str, field: str) -> Iterator[tuple[int, dict[str, Any] | None, Any]]:
    """(line number, JSON record or None for plain text, text or messages), streaming."""
    jsonl: bool | None = None
    with _open(source) as handle:
        try:
            for number, raw in enumerate(handle, start=1):
                line = raw.rstrip("\r\n")
                if jsonl is None and line.strip():
                    jsonl = line.lstrip().startswith("{")
                if not jsonl:
                    yield number, None, line
                    continue
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataValidationError(
                        f"not valid JSON: {exc.msg}", path=source, line=number
                    ) from exc
                if not isinstance(record, dict):
                    raise DataValidationError(
                        "a JSONL record must be an object", path=source, line=number
                    )
                if field not in record:
                    raise DataValidationError(
                        f"record has no field {field!r}", path=source, line=number
                    )
                value = record[field]
                if not isinstance(value, str | list):
                    raise DataValidationError(
                        f"field {field!r} must be text or a list of chat messages",
                        path=source,
                        line=number,
                    )
                yield number, record, value
        except UnicodeDecodeError as exc:
            raise DataValidationError(f"not UTF-8 text ({exc.reason})", path=source) from exc


def protect(
    source: InputArg,
    field: FieldOpt = "text",
    strategy: StrategyOpt = None,
    sensitivity: SensitivityOpt = "high",
    entities: EntitiesOpt = None,
    key_file: KeyFileOpt = None,
    key_env: KeyEnvOpt = "PRIVACY_GUARD_KEY",
) -> None:
    """Write the input with every identifier replaced (same format, one record per line)."""
    guard = _guard(strategy, sensitivity, entities, key_file, key_env)
    out = sys.stdout
    for _number, record, value in _records(source, field):
        if isinstance(value, list):
            protected: Any = guard.protect_messages(value).messages
        else:
            protected = guard.protect(value).text
        if record is None:
            out.write(protected + "\n")
        else:
            out.write(json.dumps({**record, field: protected}, ensure_ascii=False) + "\n")
    out.flush()


def scan(
    source: InputArg,
    field: FieldOpt = "text",
    output_format: Annotated[
        str, typer.Option("--format", help="table (counts by type) or jsonl (spans per record).")
    ] = "table",
    sensitivity: SensitivityOpt = "high",
    entities: EntitiesOpt = None,
) -> None:
    """Report what the guard finds, never the values: counts by type or spans per record."""
    if output_format not in ("table", "jsonl"):
        raise ConfigError(f"--format must be table or jsonl, got {output_format!r}")
    guard = _guard(["redact"], sensitivity, entities, None, "PRIVACY_GUARD_KEY")
    records = 0
    for number, record, value in _records(source, field):
        records += 1
        if isinstance(value, list):
            counts = guard.protect_messages(value).counts
            if output_format == "jsonl":
                ident = record.get("id", number) if record is not None else number
                sys.stdout.write(json.dumps({"id": ident, "counts": counts}) + "\n")
            continue
        findings = guard.protect(value).findings
        if output_format == "jsonl":
            ident = record.get("id", number) if record is not None else number
            spans = [
                {"start": f.start, "end": f.end, "type": f.type, "score": round(f.score, 3)}
                for f in findings
            ]
            sys.stdout.write(json.dumps({"id": ident, "spans": spans}, ensure_ascii=False) + "\n")
    if output_format == "table":
        from rich.table import Table

        table = Table(title=f"Guard scan: {records} records")
        table.add_column("entity type")
        table.add_column("count", justify="right")
        for entity, count in guard.counts.items():
            table.add_row(entity, str(count))
        table.add_row("total", str(sum(guard.counts.values())))
        console.print(table)
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    """Attach the ``guard`` sub-commands to the root app."""
    guard_app.command("protect")(protect)
    guard_app.command("scan")(scan)
    app.add_typer(guard_app, name="guard")
