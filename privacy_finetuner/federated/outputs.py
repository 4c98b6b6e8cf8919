"""A finished federated run on disk: the adapter like any run's model, and the client-level report.

The model, tokenizer and ``model_info.json`` are written by the same code as ``train``'s, so
``privacy-finetuner evaluate`` and ``generate`` work on a federated run directory unchanged.
``federated_report.json`` stores σ, q, C and the rounds accounted (not only ε), so the
client-level ε can be recomputed with dp-accounting.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from privacy_finetuner.config.loader import dump_config
from privacy_finetuner.federated.server_app import ClientLevelDpStrategy
from privacy_finetuner.modeling.loading import save_trained
from privacy_finetuner.training import rundir

__all__ = ["REPORT_FILE", "write_outputs"]

REPORT_FILE = "federated_report.json"


def write_outputs(
    run_dir: Path, strategy: ClientLevelDpStrategy, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Save the final adapters and write the report; returns the report."""
    run_dir.mkdir(parents=True, exist_ok=True)
    model = strategy.setup.model
    model.set_arrays(strategy.global_arrays)
    if strategy.config.output.save_model:
        with warnings.catch_warnings():
            # peft saves a LoRA-wrapped lm_head's base weights too, and says so; expected here.
            warnings.filterwarnings("ignore", message=".*save_embedding_layers")
            save_trained(model.loaded, run_dir)
    rundir.atomic_write_text(run_dir / "config.yaml", dump_config(strategy.config))
    report = {**strategy.summary(), **(extra or {})}
    rundir.atomic_write_text(
        run_dir / REPORT_FILE, json.dumps(report, indent=2, sort_keys=True, default=str) + "\n"
    )
    return report
