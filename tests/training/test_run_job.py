from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from privacy_finetuner.accounting import DpSegment, compute_epsilon
from privacy_finetuner.config import load_config
from privacy_finetuner.errors import BudgetExceededError, CalibrationError
from privacy_finetuner.training import run_job


def test_interrupt_then_resume_keeps_the_accounting(
    tmp_path: Path, tiny_job: dict[str, Any]
) -> None:
    config = load_config(None, tiny_job)
    run = tmp_path / "run"
    calls = {"n": 0}
    events: list[dict[str, Any]] = []
    segments: list[DpSegment] = []

    def ctrl_c_after_two() -> bool:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        run_job(
            config, run, should_stop=ctrl_c_after_two, on_event=events.append,
            before_step=segments.append,
        )  # fmt: skip
    assert json.loads((run / "status.json").read_text())["state"] == "interrupted"
    assert (run / "RUN_INCOMPLETE").exists() and not (run / "privacy_report.json").exists()
    assert [e["step"] for e in events] == [1, 2]
    assert {e["total_steps"] for e in events} == {4}
    assert len(segments) == 2 and segments[0].steps == 1
    sigma, q = segments[0].noise_multiplier, segments[0].sample_rate

    result = run_job(config, run, resume=True)
    assert result.status == "completed"
    assert result.steps == 4
    assert result.history == [{"noise_multiplier": sigma, "sample_rate": q, "steps": 4}]
    one_shot = compute_epsilon([DpSegment(noise_multiplier=sigma, sample_rate=q, steps=4)],
                               delta=config.privacy.delta)  # fmt: skip
    assert result.epsilon == pytest.approx(one_shot)
    assert result.epsilon <= config.privacy.target_epsilon
    assert not (run / "RUN_INCOMPLETE").exists()
    for name in ("privacy_report.json", "report.html", "MODEL_CARD.md", "model_info.json"):
        assert (run / name).is_file(), name
    assert (run / "model" / "model.safetensors").is_file()
    report = json.loads((run / "privacy_report.json").read_text())
    assert report["privacy"]["steps"] == 4 and report["status"] == "completed"
    assert report["privacy"]["epsilon"] == pytest.approx(result.epsilon)


def test_interrupt_while_reporting_resumes_without_retraining(
    tmp_path: Path, tiny_job: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C after the last step but before the report: the trained state is checkpointed, the
    run says "interrupted" (not "running"), and --resume writes the report with no new step."""
    import privacy_finetuner.training.finish as finish

    config = load_config(None, tiny_job)
    run = tmp_path / "run"
    real_finish = finish.finish_run

    def ctrl_c(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(finish, "finish_run", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run_job(config, run)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "interrupted" and status["step"] == 4
    assert (run / "RUN_INCOMPLETE").exists() and not (run / "privacy_report.json").exists()

    monkeypatch.setattr(finish, "finish_run", real_finish)
    charged: list[DpSegment] = []
    result = run_job(config, run, resume=True, before_step=charged.append)
    assert result.status == "completed" and result.steps == 4 and charged == []
    assert (run / "privacy_report.json").is_file() and not (run / "RUN_INCOMPLETE").exists()


def test_device_and_precision_settings(tmp_path: Path, tiny_job: dict[str, Any]) -> None:
    """bf16 autocast trains on the CPU too; a device this machine lacks is one clear error
    before anything is written; a device name that is not one is rejected by the schema."""
    import torch

    from privacy_finetuner.errors import ConfigError

    tiny_job["training"].update({"device": "cpu", "precision": "bf16", "max_steps": 2})
    result = run_job(load_config(None, tiny_job), tmp_path / "bf16")
    assert result.status == "completed" and math.isfinite(result.metrics["loss"])
    if not torch.cuda.is_available():
        tiny_job["training"]["device"] = "cuda"
        with pytest.raises(ConfigError, match="CUDA is not available"):
            run_job(load_config(None, tiny_job), tmp_path / "cuda")
        assert not (tmp_path / "cuda").exists()
    tiny_job["training"]["device"] = "gpu0"
    with pytest.raises(ConfigError, match=r"training\.device"):
        load_config(None, tiny_job)


def test_ledger_refusal_stops_and_still_reports(tmp_path: Path, tiny_job: dict[str, Any]) -> None:
    config = load_config(None, tiny_job)
    charged: list[DpSegment] = []

    def ledger(segment: DpSegment) -> None:
        if len(charged) == 2:
            raise BudgetExceededError("data set budget spent", requested_epsilon=9,
                                      budget_epsilon=8)  # fmt: skip
        charged.append(segment)

    result = run_job(config, tmp_path / "run", before_step=ledger)
    assert result.status == "budget_exhausted"
    assert result.steps == 2  # the refused step was never taken
    assert result.report_path is not None and result.report_path.is_file()


def test_cancel_leaves_a_resumable_incomplete_run(tmp_path: Path, tiny_job: dict[str, Any]) -> None:
    config = load_config(None, tiny_job)
    result = run_job(config, tmp_path / "run", should_stop=lambda: True)
    assert result.status == "cancelled" and result.steps == 0
    assert result.report_path is None
    assert (tmp_path / "run" / "RUN_INCOMPLETE").exists()
    assert (tmp_path / "run" / "checkpoint" / "engine.pt").is_file()


def test_unreachable_target_leaves_nothing(tmp_path: Path, tiny_job: dict[str, Any]) -> None:
    tiny_job["privacy"]["target_epsilon"] = 0.01
    config = load_config(None, tiny_job)
    with pytest.raises(CalibrationError, match=r"target epsilon 0\.01 is unreachable"):
        run_job(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
