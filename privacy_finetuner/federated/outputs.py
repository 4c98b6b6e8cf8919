"""A finished federated run on disk: the adapter like any run's model, and the client-level report.

The model, tokenizer and ``model_info.json`` are written by the same code as ``train``'s, so
``privacy-finetuner evaluate`` and ``generate`` work on a federated run directory unchanged.
``federated_report.json`` stores σ, q, C and the rounds accounted (not only ε), so the
client-level ε can be recomputed with dp-accounting. The server's exact validation losses are
computed on private held-out data that ε does not cover, so they go to the operator's
``internal_diagnostics.json`` and never into ``federated_report.json`` (issue 14, finding 3).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from privacy_finetuner.config.loader import dump_config
from privacy_finetuner.federated.server_app import ClientLevelDpStrategy
from privacy_finetuner.modeling.loading import save_trained
from privacy_finetuner.report import INTERNAL_FILE
from privacy_finetuner.training import rundir

__all__ = ["REPORT_FILE", "split_internal", "write_outputs"]

REPORT_FILE = "federated_report.json"
#: What a simulation's summary may publish: its set-up, not counts of the private data.
_PUBLIC_SIMULATION = frozenset({"clients", "wall_seconds", "cpus"})


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
    released, internal = split_internal(report)
    rundir.atomic_write_text(
        run_dir / REPORT_FILE, json.dumps(released, indent=2, sort_keys=True, default=str) + "\n"
    )
    rundir.atomic_write_text(
        run_dir / INTERNAL_FILE, json.dumps(internal, indent=2, sort_keys=True, default=str) + "\n"
    )
    return report


def split_internal(report: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report without exact statistics of private data, and those for the operator alone.

    Validation losses on held-out users and the simulation's per-client example, user and guard
    counts are not covered by the client-level ε; the released report keeps only the set-up.
    """
    released = {k: v for k, v in report.items() if k != "validation"}
    released["rounds"] = [
        {k: v for k, v in r.items() if k != "validation_loss"} for r in report.get("rounds", [])
    ]
    released["validation"] = (
        "exact validation losses are in internal_diagnostics.json (not covered by ε)"
    )
    simulation = report.get("simulation")
    if isinstance(simulation, dict):
        # per-client example counts, user and guard counts are exact statistics of private data
        released["simulation"] = {k: v for k, v in simulation.items() if k in _PUBLIC_SIMULATION}
    internal = {
        "not_covered_by_epsilon": True,
        "validation": report.get("validation"),
        "simulation": simulation,
        "round_validation_loss": [
            {"round": r.get("round"), "validation_loss": r.get("validation_loss")}
            for r in report.get("rounds", [])
        ],
    }
    return released, internal
