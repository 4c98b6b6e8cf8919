"""``privacy-finetuner guard protect|scan|reveal``: stream text or JSONL through the context guard.

Input is read line by line (bounded memory) from a file or ``-`` (stdin). A stream whose first
non-empty line is a JSON object is JSONL: the text is in ``--field``; without ``--field`` a
record's ``text`` is used, else its ``messages`` (the trace files ``data synth`` writes). A list of
chat messages is protected message by message, tool calls included; every other field passes
through unchanged. Anything else is plain text, one record per line.

Output goes to a temporary file first and reaches stdout (or ``--output``) only when the whole
input was read without error, so a bad line never leaves half a protected file behind.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from privacy_finetuner.cli._output import console, error_console
from privacy_finetuner.errors import (
    ConfigError,
    DataValidationError,
    GuardKeyError,
    NotFoundError,
    PrivacyWarning,
)

if TYPE_CHECKING:
    from privacy_finetuner.guard import ContextGuard

guard_app = typer.Typer(
    name="guard",
    help="Find and redact, pseudonymise or encrypt PII and secrets in text and JSONL.",
    no_args_is_help=True,
)

InputArg = Annotated[str, typer.Argument(help="Input file (plain text or JSONL), or - for stdin.")]
FieldOpt = Annotated[
    str | None,
    typer.Option(
        "--field", help="JSONL field holding the text (default: 'text', else 'messages')."
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Write here (atomically) instead of stdout."),
]
_AUTO_FIELDS = ("text", "messages")
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
    if any("encrypt" in (s or "").lower() for s in strategies or ()):
        _require_key(key_file, key_env, "--strategy encrypt")
    return ContextGuard(
        strategies=strategies or ["redact"],
        entities=wanted,
        sensitivity=sensitivity,
        key_file=key_file,
        key_env=key_env,
    )


def _require_key(key_file: Path | None, key_env: str, what: str) -> None:
    """Refuse before any input is read when no key is configured, naming the flags to use."""
    if key_file is None and not os.environ.get(key_env):
        raise GuardKeyError(
            f"{what} needs a key: set the {key_env} environment variable or pass "
            "--key-file FILE (see docs/guard.md, 'Keys')"
        )
    if key_file is not None and not key_file.is_file():
        raise NotFoundError(f"key file not found: {key_file}")


@contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Guard warnings (hashing without a key) as one ``warning:`` line each, no source line."""
    seen: set[str] = set()

    def show(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        text = str(message)
        if text not in seen:
            seen.add(text)
            error_console.print(f"warning: {text}", highlight=False, markup=False, soft_wrap=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always", PrivacyWarning)
        previous = warnings.showwarning
        warnings.showwarning = show
        try:
            yield
        finally:
            warnings.showwarning = previous


@contextmanager
def _atomic_output(target: Path | None) -> Iterator[IO[str]]:
    """A temporary file that becomes ``target`` (or is copied to stdout) only on success."""
    directory = target.resolve().parent if target is not None else None
    if directory is not None and not directory.is_dir():
        raise NotFoundError(f"output directory not found: {directory}")
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in every branch below
        "w+", encoding="utf-8", dir=directory, prefix=".guard-", suffix=".tmp", delete=False
    )
    try:
        yield handle
        handle.flush()
        if target is not None:
            handle.close()
            os.replace(handle.name, target)
        else:
            handle.seek(0)
            shutil.copyfileobj(handle, sys.stdout)
            sys.stdout.flush()
    finally:
        if not handle.closed:
            handle.close()
        if os.path.exists(handle.name):
            os.unlink(handle.name)


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


def _field_of(record: dict[str, Any], field: str | None, source: str, number: int) -> str:
    if field is not None:
        if field not in record:
            raise DataValidationError(f"record has no field {field!r}", path=source, line=number)
        return field
    for name in _AUTO_FIELDS:
        if name in record:
            return name
    raise DataValidationError(
        "record has neither a 'text' nor a 'messages' field; name the field with --field",
        path=source,
        line=number,
    )


def _lines(source: str) -> Iterator[tuple[int, Any, str]]:
    """(line number, parsed JSON or None for a plain-text file, the line), streaming.

    The first non-blank line decides: a file whose first line opens ``{`` is JSONL (blank lines
    skipped, each other line must parse); anything else is plain text, line by line.
    """
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
                    yield number, json.loads(line), line
                except json.JSONDecodeError as exc:
                    raise DataValidationError(
                        f"not valid JSON: {exc.msg}", path=source, line=number
                    ) from exc
        except UnicodeDecodeError as exc:
            raise DataValidationError(f"not UTF-8 text ({exc.reason})", path=source) from exc


def _records(
    source: str, field: str | None
) -> Iterator[tuple[int, dict[str, Any] | None, str, Any]]:
    """(line number, JSON record or None for plain text, field, text or messages), streaming."""
    for number, record, line in _lines(source):
        if record is None:
            yield number, None, "", line
            continue
        if not isinstance(record, dict):
            raise DataValidationError("a JSONL record must be an object", path=source, line=number)
        name = _field_of(record, field, source, number)
        value = record[name]
        if not isinstance(value, str | list):
            raise DataValidationError(
                f"field {name!r} must be text or a list of chat messages",
                path=source,
                line=number,
            )
        yield number, record, name, value


def protect(
    source: InputArg,
    field: FieldOpt = None,
    strategy: StrategyOpt = None,
    sensitivity: SensitivityOpt = "high",
    entities: EntitiesOpt = None,
    key_file: KeyFileOpt = None,
    key_env: KeyEnvOpt = "PRIVACY_GUARD_KEY",
    output: OutputOpt = None,
) -> None:
    """Write the input with every identifier replaced (same format, one record per line)."""
    guard = _guard(strategy, sensitivity, entities, key_file, key_env)
    with _one_line_warnings(), _atomic_output(output) as out:
        for _number, record, name, value in _records(source, field):
            if isinstance(value, list):
                protected: Any = guard.protect_messages(value).messages
            else:
                protected = guard.protect(value).text
            if record is None:
                out.write(protected + "\n")
            else:
                out.write(json.dumps({**record, name: protected}, ensure_ascii=False) + "\n")


def reveal(
    source: InputArg,
    key_file: KeyFileOpt = None,
    key_env: KeyEnvOpt = "PRIVACY_GUARD_KEY",
    output: OutputOpt = None,
) -> None:
    """Decrypt the tokens that ``protect --strategy encrypt`` wrote (needs the same key)."""
    from privacy_finetuner.guard import ContextGuard

    _require_key(key_file, key_env, "guard reveal")
    guard = ContextGuard(key_file=key_file, key_env=key_env)
    with _atomic_output(output) as out:
        for _, record, line in _lines(source):
            if record is None:
                out.write(guard.reveal(line) + "\n")
            else:
                out.write(json.dumps(_walk(record, guard.reveal), ensure_ascii=False) + "\n")


def _walk(value: Any, fn: Callable[[str], str]) -> Any:
    """``value`` with ``fn`` applied to every string inside it (JSON-like data)."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_walk(item, fn) for item in value]
    if isinstance(value, dict):
        return {key: _walk(item, fn) for key, item in value.items()}
    return value


def scan(
    source: InputArg,
    field: FieldOpt = None,
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
    for number, record, _name, value in _records(source, field):
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
    guard_app.command("reveal")(reveal)
    app.add_typer(guard_app, name="guard")
