"""Reading a run directory's evidence files for the compliance pack.

Each file is parsed on its own, and an unreadable one is recorded as a problem and treated as
absent, so a half-written run still yields a pack that says what is missing instead of a traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from privacy_finetuner.errors import NotFoundError

__all__ = ["LEDGER_FILES", "Evidence", "collect_evidence", "lookup", "read_ledger_entries"]

#: Files the ledger's export may be saved as in a run directory, in order of preference.
LEDGER_FILES = ("ledger_entries.json", "ledger.json")

#: Key of the entry list in the ledger's export (the service's paged ``GET
#: /v1/datasets/{id}/ledger`` answer and ``ledger export``); a bare list is accepted too.
LEDGER_ITEMS_KEY = "items"

#: Key of an entry's chain hash in the export (``LedgerEntryPublic.hash``).
LEDGER_HASH_KEY = "hash"


@dataclass
class Evidence:
    """The run directory's files, parsed; None where absent."""

    run_dir: Path
    report: dict[str, Any] | None = None
    audit: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    ledger: list[dict[str, Any]] | None = None
    ledger_file: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        """Names of the evidence files that are absent."""
        present = {
            "privacy_report.json": self.report,
            "audit.json": self.audit,
            "config.yaml": self.config,
            "status.json": self.status,
            "ledger entries (ledger_entries.json)": self.ledger,
        }
        return [name for name, value in present.items() if value is None]

    def present_files(self, *names: str) -> list[str]:
        """Those of ``names`` that exist in the run directory, in the order given."""
        return [name for name in names if (self.run_dir / name).is_file()]


def lookup(data: object, *path: str) -> Any:
    """``data[path[0]][path[1]]…``, or None as soon as a level is not a mapping or lacks the key."""
    current: Any = data
    for key in path:
        if not isinstance(current, dict):
            return None
        current = current.get(key)
    return current


def _read_json(path: Path, problems: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{path.name} could not be read ({type(exc).__name__}); treated as absent")
        return None


def _read_json_object(path: Path, problems: list[str]) -> dict[str, Any] | None:
    loaded = _read_json(path, problems)
    if loaded is not None and not isinstance(loaded, dict):
        problems.append(f"{path.name} does not hold a JSON object; treated as absent")
        return None
    return loaded


def _read_yaml_object(path: Path, problems: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        problems.append(
            f"{path.name} could not be parsed ({type(exc).__name__}); treated as absent"
        )
        return None
    return loaded if isinstance(loaded, dict) else None


def read_ledger_entries(raw: object) -> list[dict[str, Any]] | None:
    """The entry list of a ledger export: its ``items`` (a page of the API) or a bare list."""
    if isinstance(raw, dict):
        raw = raw.get(LEDGER_ITEMS_KEY)
    if not isinstance(raw, list):
        return None
    return [entry for entry in raw if isinstance(entry, dict)]


#: The run's internal diagnostics (exact data statistics; not covered by ε, never released).
INTERNAL_DIAGNOSTICS_FILE = "internal_diagnostics.json"


def _with_internal(
    report: dict[str, Any] | None, internal: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The released report with the internal diagnostics' data, guard and metrics sections
    merged in: the pack is an operator document and states the exact counts, which the released
    report no longer carries (issue 14)."""
    if report is None or internal is None:
        return report
    merged = dict(report)
    for section in ("data", "guard", "metrics"):
        extra = internal.get(section)
        if isinstance(extra, dict):
            base = merged.get(section)
            merged[section] = {**(base if isinstance(base, dict) else {}), **extra}
    return merged


def collect_evidence(run_dir: str | Path) -> Evidence:
    """Read whatever evidence the run directory holds.

    Raises:
        NotFoundError: the directory does not exist.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise NotFoundError(f"run directory {run} does not exist")
    evidence = Evidence(run)
    problems = evidence.problems
    evidence.report = _with_internal(
        _read_json_object(run / "privacy_report.json", problems),
        _read_json_object(run / INTERNAL_DIAGNOSTICS_FILE, problems),
    )
    evidence.audit = _read_json_object(run / "audit.json", problems)
    evidence.status = _read_json_object(run / "status.json", problems)
    evidence.config = _read_yaml_object(run / "config.yaml", problems)
    for name in LEDGER_FILES:
        entries = read_ledger_entries(_read_json(run / name, problems))
        if entries is not None:
            evidence.ledger, evidence.ledger_file = entries, name
            break
    return evidence
