"""A real tiny run directory, trained once per session and shared by the audit tests.

The compliance pack is tested on what the trainer, the audit and the ledger actually write, so a
drift in any of their formats fails here instead of hiding behind a fabricated fixture.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

TINY_JOB: dict[str, Any] = {
    "data": {"max_length": 96},
    "guard": {"enabled": True},
    "model": {
        "name": "tiny",
        "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
                 "vocab_size": 400, "tokenizer_corpus_size": 30},
    },
    "training": {"max_steps": 3, "batch_size": 8, "eval_every": 100, "eval_batches": 1,
                 "checkpoint_every": 100, "eval_tool_calls": 1},
    "privacy": {"noise_multiplier": 1.0, "target_epsilon": None, "max_physical_batch_size": 16},
}  # fmt: skip


@dataclass(frozen=True)
class TinyRun:
    """The run directory and what its producers returned (not read back from its files)."""

    run_dir: Path
    epsilon: float
    steps: int
    noise_multiplier: float
    epsilon_lower: float
    ledger_entries: int
    chain_head: str  # the data set's head hash as the ledger stores it


def export_ledger(tmp: Path, *, delta: float) -> tuple[dict[str, Any], int, str]:
    """A data set's ledger entries as the service's ``GET /v1/datasets/{id}/ledger`` returns
    them (a registration and a reservation, hash-chained by the real ledger), their number and
    the chain head the ledger stores for the data set."""
    from sqlalchemy import select

    from privacy_finetuner.accounting import DpSegment
    from privacy_finetuner.ledger import Database, Ledger
    from privacy_finetuner.ledger.models import LedgerEntry
    from privacy_finetuner.service.migrate import upgrade_database
    from privacy_finetuner.service.schemas import LedgerEntryPublic, Page

    db = Database(f"sqlite:///{tmp / 'ledger.db'}")
    try:
        upgrade_database(db)
        ledger = Ledger(db)
        ds = ledger.register_dataset(
            tenant="t", name="traces", budget_epsilon=50.0, budget_delta=delta, num_units=100
        )
        ledger.submit_job(
            dataset_id=ds.id,
            tenant="t",
            planned=[DpSegment(noise_multiplier=1.0, sample_rate=0.1, steps=3)],
            config={},
            clip_norm=1.0,
            delta=delta,
        )
        with db.read_session() as session:
            rows = session.scalars(
                select(LedgerEntry).where(LedgerEntry.dataset_id == ds.id).order_by(LedgerEntry.seq)
            ).all()
            items = [LedgerEntryPublic.model_validate(r, from_attributes=True) for r in rows]
        page = Page(items=items, count=len(items), limit=100, offset=0)
        head = ledger.get_dataset(ds.id, tenant="t").head_hash
        return page.model_dump(mode="json"), len(items), head
    finally:
        db.dispose()


@pytest.fixture(scope="session")
def tiny_run_source(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """A finished, audited tiny run with its ledger export (train once; copy before changing).

    Audited as ``train --audit`` does (canaries in the training file, ``finish_audit`` after the
    run) but against a few hundred candidates instead of 10⁴, to keep it fast.
    """
    from benchmarks.audit_experiment import run_audited_job, write_audit_data
    from privacy_finetuner.config.schema import JobConfig
    from privacy_finetuner.data.audit_canaries import plan_canaries

    root = tmp_path_factory.mktemp("tiny_run")
    run = root / "run"
    plan = plan_canaries(8, repeats=2, seed=0)
    train, validation = write_audit_data(root / "data", plan, traces=30, validation_traces=6)
    job = {**TINY_JOB, "data": {**TINY_JOB["data"], "path": str(train)}}
    job["data"]["validation_path"] = str(validation)
    config = JobConfig.model_validate(job)
    result, audit = run_audited_job(config, run, plan, candidates=300)
    export, entries, head = export_ledger(root, delta=config.privacy.delta)
    (run / "ledger_entries.json").write_text(json.dumps(export), encoding="utf-8")
    return TinyRun(
        run_dir=run,
        epsilon=result.epsilon,
        steps=result.steps,
        noise_multiplier=result.noise_multiplier,
        epsilon_lower=audit.one_run.epsilon_lower,
        ledger_entries=entries,
        chain_head=head,
    )


@pytest.fixture
def tiny_run(tiny_run_source: TinyRun, tmp_path: Path) -> Path:
    """A private copy of the tiny run directory, free to edit."""
    return Path(shutil.copytree(tiny_run_source.run_dir, tmp_path / "run"))
