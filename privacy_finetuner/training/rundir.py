"""The run directory's life cycle, so a failed or interrupted run never looks finished.

A run directory holds ``RUN_INCOMPLETE`` from the moment it is created until every output is
written; ``status.json``'s ``state`` is a :class:`~privacy_finetuner.jobs.RunStatus` value
(``running``, ``interrupted``, ``cancelled``, ``failed``, ``budget_exhausted`` or ``completed``). ``privacy_report.json`` is written last, atomically, and only by a run that
completed (or stopped early at a budget, whose ε is still valid). ``internal_diagnostics.json``
beside it holds the exact statistics of the private data, which ε does not cover: it is for the
operator and is never part of the bundle ``privacy-finetuner report release`` writes.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from privacy_finetuner.errors import CheckpointError, NotFoundError
from privacy_finetuner.jobs import RunStatus

__all__ = [
    "CHECKPOINT_DIR",
    "INCOMPLETE_MARKER",
    "STATUS_FILE",
    "atomic_write_text",
    "default_run_dir",
    "mark_finished",
    "mark_started",
    "read_status",
    "write_status",
]

INCOMPLETE_MARKER = "RUN_INCOMPLETE"
STATUS_FILE = "status.json"
CHECKPOINT_DIR = "checkpoint"


def default_run_dir(root: Path = Path("runs")) -> Path:
    """A fresh ``runs/<UTC timestamp>`` directory name (suffixed if it already exists)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    candidate = root / stamp
    n = 1
    while candidate.exists():
        candidate = root / f"{stamp}-{n}"
        n += 1
    return candidate


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename (no half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_status(run_dir: Path, state: RunStatus, **extra: Any) -> None:
    """Record the run's state (and e.g. ``error`` or ``step``) in ``status.json``."""
    payload = {"state": state.value, "updated": datetime.now(timezone.utc).isoformat(), **extra}
    atomic_write_text(run_dir / STATUS_FILE, json.dumps(payload, indent=2) + "\n")


def read_status(run_dir: Path) -> dict[str, Any]:
    """The run's ``status.json``.

    Raises:
        NotFoundError: not a run directory.
    """
    path = run_dir / STATUS_FILE
    if not path.is_file():
        raise NotFoundError(f"{run_dir} is not a run directory ({STATUS_FILE} missing)")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def mark_started(run_dir: Path, *, resume: bool) -> None:
    """Create (or, on resume, reopen) the run directory and flag it incomplete.

    Raises:
        CheckpointError: a fresh run would overwrite a non-empty directory, or a resumed run
            has no checkpoint.
    """
    if resume:
        if not (run_dir / CHECKPOINT_DIR).is_dir():
            raise CheckpointError(f"cannot resume {run_dir}: it has no checkpoint")
        if read_status(run_dir).get("state") == RunStatus.COMPLETED:
            raise CheckpointError(f"cannot resume {run_dir}: the run already completed")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise CheckpointError(
            f"output directory {run_dir} is not empty; choose another or use --resume"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / INCOMPLETE_MARKER).write_text(
        "This run has not finished; its outputs are not valid yet.\n", encoding="utf-8"
    )
    write_status(run_dir, RunStatus.RUNNING)


def mark_finished(run_dir: Path, state: RunStatus, **extra: Any) -> None:
    """Final state; the incomplete marker goes only when the outputs are all there."""
    write_status(run_dir, state, **extra)
    if state.finished:
        (run_dir / INCOMPLETE_MARKER).unlink(missing_ok=True)
