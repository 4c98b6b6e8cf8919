"""End to end with the real training job: noise switched off while ε is still reported.

Trains a tiny model twice on CPU (a few minutes), so it runs only with PF_AUDIT_E2E=1; the same
check at benchmark scale is ``benchmarks/bench_audit.py`` (its non-private run is this bug).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from privacy_finetuner.cli.main import main
from privacy_finetuner.config.schema import JobConfig
from privacy_finetuner.data.audit_canaries import plan_canaries

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("PF_AUDIT_E2E"), reason="set PF_AUDIT_E2E=1"),
]


def _config(data: tuple[Path, Path]) -> JobConfig:
    return JobConfig.model_validate(
        {
            "data": {"path": str(data[0]), "validation_path": str(data[1]), "max_length": 96},
            "guard": {"enabled": False},
            "training": {"epochs": 6, "batch_size": 4, "learning_rate": 5e-3, "eval_every": 999},
            "privacy": {
                "privacy_unit": "user",
                "target_epsilon": None,
                "noise_multiplier": 10.0,  # the accountant records σ = 10 ...
                "max_grad_norm": 1e4,
            },
        }
    )


def test_noise_switched_off_is_caught(tmp_path: Path) -> None:
    from benchmarks.audit_experiment import run_audited_job, write_audit_data

    plan = plan_canaries(48, repeats=10, seed=0)
    data = write_audit_data(tmp_path / "data", plan, traces=20, validation_traces=4)
    run = tmp_path / "run"
    # ... but the engine adds no noise.
    result, audit = run_audited_job(_config(data), run, plan, noiseless=True, candidates=2000)
    assert result.epsilon < 1.0  # what the run claims
    assert audit.violation, audit.message
    with pytest.raises(SystemExit) as exc:
        main(["audit", str(run), "--candidates", "2000"])
    assert exc.value.code == 3
