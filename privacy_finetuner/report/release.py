"""``privacy-finetuner report release RUN_DIR OUT``: the publishable bundle of a run, alone.

A run directory mixes released and internal artefacts (see :mod:`.schema`). The bundle holds
only what the reported ε covers: the model weights (and, for a LoRA adapter on the randomly
initialised tiny base, that public base), the tokenizer (trained on public synthetic text or
the base model's own), ``model_info.json``, ``privacy_report.json`` (checked against the
released schema), and ``MODEL_CARD.md`` and ``report.html`` rendered afresh from that report,
so no internal section and no embedded diagnostic can come along. Left out on purpose:
``internal_diagnostics.json``, the run's ``report.html`` (its internal section), ``config.yaml``
(local paths), ``status.json``, checkpoints, canaries and audit files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from privacy_finetuner.errors import ConfigError, NotFoundError
from privacy_finetuner.report.documents import (
    REPORT_FILE,
    atomic_write_text,
    render_html,
    render_model_card,
)
from privacy_finetuner.report.schema import UnpublishableReportError, check_publishable

__all__ = ["RELEASED_DIRS", "RELEASED_FILES", "write_release"]

#: Directories copied from the run (if present): the weights, the tokenizer, a public base.
RELEASED_DIRS = ("model", "tokenizer", "base_model")
#: Files copied from the run as they are.
RELEASED_FILES = ("model_info.json",)
_FINISHED = {"completed", "budget_exhausted"}


def _read_report(run: Path) -> dict[str, Any]:
    path = run / REPORT_FILE
    if not path.is_file():
        raise NotFoundError(f"{run} has no {REPORT_FILE}: only a finished run can be released")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise UnpublishableReportError(f"{path} is not valid JSON") from None
    if not isinstance(report, dict):
        raise UnpublishableReportError(f"{path} is not a report object")
    return report


def write_release(
    run_dir: str | Path, out: str | Path, *, allow_invalid: bool = False
) -> list[Path]:
    """Write the publishable bundle of ``run_dir`` into ``out``; returns the paths written.

    Args:
        run_dir: a finished run directory.
        out: a new or empty directory.
        allow_invalid: release a run whose ε is not valid (``epsilon_valid: false``; the card
            and the report say so). Off by default: such a model carries no guarantee.

    Raises:
        NotFoundError: no run directory, no report, or no model in it.
        ConfigError: ``out`` is not empty, or lies inside the run directory.
        UnpublishableReportError: the run is unfinished, its report holds fields ε does not
            cover (e.g. written by an older version), or its ε is not valid.
    """
    run, dest = Path(run_dir), Path(out)
    if not run.is_dir():
        raise NotFoundError(f"run directory {run} does not exist")
    if (run / "RUN_INCOMPLETE").exists():
        raise UnpublishableReportError(f"{run} has not finished (RUN_INCOMPLETE is present)")
    report = _read_report(run)
    check_publishable(report)
    if report.get("status") not in _FINISHED:
        raise UnpublishableReportError(f"{run} did not finish (status {report.get('status')!r})")
    if report.get("privacy", {}).get("epsilon_valid") is not True and not allow_invalid:
        reasons = report.get("privacy", {}).get("epsilon_invalid_reasons") or []
        raise UnpublishableReportError(
            "the run's ε is not valid (epsilon_valid: false"
            + (f"; {'; '.join(reasons)}" if reasons else "")
            + "); retrain with privacy.secure_mode: true, or pass --allow-invalid-epsilon to "
            "release it with the card saying so"
        )
    if not (run / "model").is_dir():
        raise NotFoundError(f"{run} holds no model (output.save_model was off)")
    if dest.resolve().is_relative_to(run.resolve()):
        raise ConfigError(f"the release directory {dest} must lie outside the run directory")
    if dest.exists() and any(dest.iterdir()):
        raise ConfigError(f"release directory {dest} is not empty; choose another")
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name in RELEASED_DIRS:
        if (run / name).is_dir():
            shutil.copytree(run / name, dest / name, symlinks=False)
            written.append(dest / name)
    for name in RELEASED_FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, dest / name)
            written.append(dest / name)
    for name, text in (
        (REPORT_FILE, json.dumps(report, indent=2) + "\n"),
        ("MODEL_CARD.md", render_model_card(report)),
        ("report.html", render_html(report)),
    ):
        atomic_write_text(dest / name, text)
        written.append(dest / name)
    return written
