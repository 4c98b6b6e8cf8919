"""``train`` as a new user meets it: one-line errors with the documented exit codes, a refused
``--resume`` that would change the job, a finished run directory named up front, δ warnings on
the console, a summary without Python literals, and paths relative to the job file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

JOB = {
    "data": {"path": "traces.jsonl", "max_length": 96, "validation_split": 0.2},
    "guard": {"enabled": False},
    "model": {
        "name": "tiny",
        "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
                 "vocab_size": 400, "tokenizer_corpus_size": 30},
    },
    "training": {"max_steps": 2, "batch_size": 8, "eval_every": 2, "eval_batches": 1,
                 "checkpoint_every": 100, "eval_tool_calls": 2},
    "privacy": {"noise_multiplier": 1.0, "target_epsilon": 20.0, "max_physical_batch_size": 8},
}  # fmt: skip


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "privacy_finetuner", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=cwd,
        env=env,
    )


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A job file in its own directory, next to the traces it names by a relative path."""
    root = tmp_path_factory.mktemp("user")
    jobs = root / "jobs"
    jobs.mkdir()
    (jobs / "job.yaml").write_text(yaml.safe_dump(JOB), encoding="utf-8")
    proc = _run("data", "synth", "--n", "60", "--seed", "0", str(jobs / "traces.jsonl"), cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root


@pytest.fixture(scope="module")
def finished(job_dir: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One tiny run from another working directory, with a δ far above 1/n."""
    elsewhere = job_dir / "elsewhere"
    elsewhere.mkdir()
    proc = _run(
        "train", str(job_dir / "jobs" / "job.yaml"), "--output-dir", str(job_dir / "run"),
        "--set", "privacy.delta=0.5", cwd=elsewhere,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return job_dir / "run", proc


def test_bad_set_value_is_one_line_exit_2(job_dir: Path) -> None:
    proc = _run("train", "jobs/job.yaml", "--set", "training.max_steps=[1", cwd=job_dir)
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "--set training.max_steps" in line


def test_flag_errors_do_not_blame_a_line_of_the_file(job_dir: Path) -> None:
    proc = _run("train", "jobs/job.yaml", "--set", "privacy.delta=2", cwd=job_dir)
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "job.yaml" not in line
    assert "privacy.delta" in line and "flag or override" in line


def test_unreachable_epsilon_exits_2(job_dir: Path, tmp_path: Path) -> None:
    proc = _run(
        "train", "jobs/job.yaml", "--output-dir", str(tmp_path / "run"),
        "--set", "privacy.noise_multiplier=null", "--target-epsilon", "0.0001", cwd=job_dir,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "unreachable" in _one_error_line(proc)


def test_occupied_directory_exits_2(job_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    proc = _run("train", "jobs/job.yaml", "--output-dir", str(tmp_path), cwd=job_dir)
    assert proc.returncode == 2
    assert "not empty" in _one_error_line(proc)
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_delta_warning_reaches_the_console(
    finished: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    _, proc = finished
    assert "warning:" in proc.stderr and "delta=0.5" in proc.stderr and "1/n" in proc.stderr


def test_summary_has_no_python_literals_and_no_progress_bar_off_a_terminal(
    finished: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    _, proc = finished
    assert "DP fine-tuning finished" in proc.stdout
    for literal in ("None", "False", "True"):
        assert literal not in proc.stdout
    # stderr is a pipe here, as in a log file: no tqdm/rich bar, no carriage returns.
    assert "\r" not in proc.stderr and "it/s" not in proc.stderr and "━" not in proc.stderr


def test_relative_paths_resolve_against_the_job_file_and_are_saved_absolute(
    job_dir: Path, finished: tuple[Path, subprocess.CompletedProcess[str]]
) -> None:
    run, _ = finished
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert saved["data"]["path"] == str((job_dir / "jobs" / "traces.jsonl").resolve())
    assert saved["privacy"]["delta"] == 0.5


def test_finished_run_directory_is_named_before_any_work(
    job_dir: Path, finished: tuple[Path, subprocess.CompletedProcess[str]]
) -> None:
    run, _ = finished
    # The data flag names a missing file: had data loading started, that would be the error.
    again = _run(
        "train", "jobs/job.yaml", "--output-dir", str(run), "--data", "missing.jsonl", cwd=job_dir
    )
    assert again.returncode == 2
    assert "holds a finished run" in _one_error_line(again)
    resumed = _run("train", "--resume", str(run), cwd=job_dir)
    assert resumed.returncode == 2
    assert "nothing to resume" in _one_error_line(resumed)


def test_resume_refuses_flags_that_change_the_job(
    job_dir: Path, finished: tuple[Path, subprocess.CompletedProcess[str]]
) -> None:
    run, _ = finished
    proc = _run(
        "train", "--resume", str(run), "--max-steps", "9", "--data", "x.jsonl",
        "--set", "training.seed=3", cwd=job_dir,
    )  # fmt: skip
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "--max-steps" in line and "--data" in line and "--set" in line
    harmless = _run("train", "--resume", str(run), "--no-progress", "--json", cwd=job_dir)
    assert harmless.returncode == 2
    assert "nothing to resume" in _one_error_line(harmless)  # the flags were accepted


def test_run_directory_checks_name_each_case(tmp_path: Path) -> None:
    import json

    from privacy_finetuner.cli.train import _check_run_dir
    from privacy_finetuner.errors import CheckpointError, NotFoundError

    interrupted = tmp_path / "interrupted"
    (interrupted / "checkpoint").mkdir(parents=True)
    (interrupted / "status.json").write_text(json.dumps({"state": "interrupted"}))
    with pytest.raises(CheckpointError, match=f"continue it with --resume {interrupted}"):
        _check_run_dir(interrupted, resume=False)
    _check_run_dir(interrupted, resume=True)  # resumable: no complaint

    early = tmp_path / "early"
    early.mkdir()
    (early / "status.json").write_text(json.dumps({"state": "failed"}))
    with pytest.raises(CheckpointError, match="has no checkpoint"):
        _check_run_dir(early, resume=True)
    with pytest.raises(NotFoundError, match="no such run directory"):
        _check_run_dir(tmp_path / "nowhere", resume=True)
    _check_run_dir(tmp_path / "fresh", resume=False)


@pytest.mark.parametrize(("group", "scope"), [(1, "one privacy unit"), (10, "10 privacy units")])
def test_audit_line_says_what_the_proven_epsilon_covers(
    group: int, scope: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from types import SimpleNamespace

    from privacy_finetuner.audit.one_run import OneRunBound
    from privacy_finetuner.audit.runner import AuditResult
    from privacy_finetuner.cli.train import _check_audit

    bound = OneRunBound(
        epsilon_lower=0.1, confidence=0.95, delta=1e-5, m=64, members=32, k_plus=4, k_minus=4,
        correct=5, grid_size=10,
    )  # fmt: skip
    audit = AuditResult(
        proven_epsilon=2.0, delta=1e-5, group_size=group, claimed_epsilon=2.0 * group,
        claimed_delta=1e-5, one_run=bound, exposure={"median_bits": 1.5}, mia=[], canaries=64,
        repeats=group,
    )  # fmt: skip
    _check_audit(SimpleNamespace(audit=audit), as_json=False)
    out = capsys.readouterr().out
    assert scope in out
    assert ("group privacy applied" in out) == (group > 1)
