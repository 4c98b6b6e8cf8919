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
    assert all("loss" not in e for e in events)  # exact batch losses stay internal
    assert len(segments) == 2 and segments[0].steps == 1
    sigma, q = segments[0].noise_multiplier, segments[0].sample_rate

    result = run_job(config, run, resume=True)
    assert result.status == "completed"
    assert result.steps == 4
    assert result.history == [{"noise_multiplier": sigma, "sample_rate": q, "steps": 4}]
    one_shot = compute_epsilon([DpSegment(noise_multiplier=sigma, sample_rate=q, steps=4)],
                               delta=config.privacy.delta)  # fmt: skip
    assert result.epsilon == pytest.approx(one_shot)
    target = config.privacy.target_epsilon
    assert target is not None and result.epsilon <= target
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


def _exact_needles(internal: dict[str, Any]) -> list[str]:
    """Text forms of the internal file's exact values that must never reach the bundle."""
    metrics = internal["metrics"]
    values = [v for _, v in metrics["train_loss"]] + [v for _, v in metrics["validation_loss"]]
    values += [v for v in metrics["final"].values() if isinstance(v, float) and 0 < v < 1e6]
    return sorted({form for v in values for form in (repr(v), f"{v:.5f}")})


def test_release_bundle_holds_only_what_epsilon_covers(
    tmp_path: Path, tiny_job: dict[str, Any]
) -> None:
    """Finding 3: exact losses, private validation metrics and PII counts go to the internal
    diagnostics only; `report release` writes a bundle without any of them."""
    import re

    from privacy_finetuner.cli.main import main

    tiny_job["guard"]["enabled"] = True
    tiny_job["privacy"]["secure_mode"] = True
    run = tmp_path / "run"
    result = run_job(load_config(None, tiny_job), run)
    internal = json.loads((run / "internal_diagnostics.json").read_text())
    assert internal["covered_by_epsilon"] is False
    counts = internal["guard"]["counts"]
    assert sum(counts.values()) > 0 and len(internal["metrics"]["train_loss"]) == 4
    report = json.loads((run / "privacy_report.json").read_text())
    assert report["privacy"]["epsilon_valid"] is True
    assert report["privacy"]["epsilon_invalid_reasons"] == []
    assert report["privacy"]["neighbouring"] == "zero_out"
    assert report["privacy"]["epsilon_replace_one"] > report["privacy"]["epsilon"]
    assert report["metrics"]["final"] == {} and result.metrics["loss"] > 0  # exact: in-process
    dp_val = report["metrics"]["dp_validation"]  # the DP estimate, at the run's ε (parallel)
    assert dp_val["epsilon"] == pytest.approx(report["privacy"]["epsilon"])
    assert dp_val["clip"] == pytest.approx(math.log(400)) and dp_val["noise_multiplier"] > 0
    assert dp_val["loss"] != internal["metrics"]["final"]["loss"]
    assert report["data"]["validation"] == "private (DP estimate only)"

    out = tmp_path / "bundle"
    try:
        main(["report", "release", str(run), str(out)])
    except SystemExit as exc:  # main exits only on failure
        raise AssertionError(f"report release exited {exc.code}") from None
    names = {p.relative_to(out).parts[0] for p in out.rglob("*")}
    assert {"model", "tokenizer", "MODEL_CARD.md", "privacy_report.json", "report.html"} <= names
    assert names.isdisjoint({"internal_diagnostics.json", "status.json", "config.yaml"})
    needles = _exact_needles(internal)
    assert needles
    for path in (p for p in out.rglob("*") if p.is_file()):
        text = path.read_bytes().decode("latin-1")
        for needle in needles:
            assert needle not in text, (path.name, needle)
        for kind, n in counts.items():
            assert not re.search(rf"{kind}\W{{0,6}}{n}\b", text), (path.name, kind)
        assert "Internal diagnostics" not in text
    card = (out / "MODEL_CARD.md").read_text()
    assert "under the zero-out neighbouring relation" in card
    # The run's own report.html keeps the exact figures, under the heading that says so.
    html = (run / "report.html").read_text()
    assert "NOT covered by ε" in html.split(needles[0])[0]


def test_seeded_run_says_epsilon_is_not_valid(tmp_path: Path, tiny_job: dict[str, Any]) -> None:
    """Finding 1/2: with secure_mode off the report, card and HTML say epsilon_valid: false and
    why; the release refuses such a run unless asked explicitly."""
    from privacy_finetuner.report import UnpublishableReportError, write_release

    tiny_job["privacy"]["secure_mode"] = False
    tiny_job["training"]["max_steps"] = 2
    run = tmp_path / "run"
    run_job(load_config(None, tiny_job), run)
    privacy = json.loads((run / "privacy_report.json").read_text())["privacy"]
    assert privacy["epsilon_valid"] is False
    assert "seeded" in privacy["epsilon_invalid_reasons"][0]
    assert "`epsilon_valid: false`" in (run / "MODEL_CARD.md").read_text()
    assert "epsilon_valid: <b>false</b>" in (run / "report.html").read_text()
    with pytest.raises(UnpublishableReportError, match="epsilon_valid: false"):
        write_release(run, tmp_path / "bundle")
    written = write_release(run, tmp_path / "bundle", allow_invalid=True)
    assert "`epsilon_valid: false`" in (tmp_path / "bundle" / "MODEL_CARD.md").read_text()
    assert written


def _weights(run: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    files = sorted((run / "model").glob("*.safetensors"))
    assert files, f"no weights in {run / 'model'}"
    return {f"{f.name}:{k}": v for f in files for k, v in load_file(str(f)).items()}


def test_identical_default_runs_write_different_weights(
    tmp_path: Path, tiny_job: dict[str, Any]
) -> None:
    """Finding 1, end to end: with the default (secure) config two runs of the same job and seed
    release different weights (the noise and batches are not a function of the published seed);
    with secure_mode off the same two runs replay bit for bit, so the difference is the RNG."""
    import torch

    tiny_job["training"]["max_steps"] = 2
    runs = []
    for name in ("a", "b"):
        run = tmp_path / name
        run_job(load_config(None, tiny_job), run)
        assert json.loads((run / "privacy_report.json").read_text())["privacy"]["secure_mode"]
        runs.append(_weights(run))
    assert runs[0].keys() == runs[1].keys()
    assert any(not torch.equal(runs[0][k], runs[1][k]) for k in runs[0])

    tiny_job["privacy"]["secure_mode"] = False
    seeded = []
    for name in ("c", "d"):
        run_job(load_config(None, tiny_job), tmp_path / name)
        seeded.append(_weights(tmp_path / name))
    assert all(torch.equal(seeded[0][k], seeded[1][k]) for k in seeded[0])


def _traces_file(tmp_path: Path, strip_user_from: set[int]) -> Path:
    from privacy_finetuner.data import generate_traces
    from privacy_finetuner.data.loaders import write_traces

    path = tmp_path / "traces.jsonl"
    write_traces(generate_traces(40, seed=3).traces, path)
    lines = path.read_text().splitlines()
    for i in strip_user_from:
        record = json.loads(lines[i])
        record.pop("user_id")
        lines[i] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_user_level_refuses_traces_without_user_id(
    tmp_path: Path, tiny_job: dict[str, Any]
) -> None:
    """Finding 7: a user-level run names the count and the first file:line, and runs only when
    the config opts in to one user per such trace, which the report states."""
    from privacy_finetuner.errors import DataError

    data = _traces_file(tmp_path, {6, 11, 30})
    tiny_job["data"] = {"path": str(data), "max_length": 96, "validation_split": 0.0}
    tiny_job["privacy"]["privacy_unit"] = "user"
    tiny_job["training"]["max_steps"] = 2
    with pytest.raises(
        DataError, match=rf"3 of 40 traces have no user_id \(first at .*{data.name}:7\)"
    ):
        run_job(load_config(None, tiny_job), tmp_path / "refused")
    assert not (tmp_path / "refused").exists()

    tiny_job["data"]["missing_user_id"] = "own_user"
    run = tmp_path / "run"
    run_job(load_config(None, tiny_job), run)
    report = json.loads((run / "privacy_report.json").read_text())
    assert report["data"]["missing_user_id"] == "own_user"
    assert "treated as their own user" in (run / "MODEL_CARD.md").read_text()
    internal = json.loads((run / "internal_diagnostics.json").read_text())
    assert internal["data"]["traces_without_user_id"] == 3
