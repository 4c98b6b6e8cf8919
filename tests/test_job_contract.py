"""The job contract: one run-status vocabulary, its one mapping to service job states, and a
RunResult the trainer, the simulated job and the service share."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from privacy_finetuner.errors import ConfigError
from privacy_finetuner.jobs import JobState, RunResult, RunStatus, job_outcome


def test_statuses_are_the_strings_status_json_holds() -> None:
    assert RunStatus("budget_exhausted") is RunStatus.BUDGET_EXHAUSTED
    assert isinstance(RunStatus.COMPLETED, str) and f"{RunStatus.COMPLETED}" == "completed"
    assert json.dumps({"state": RunStatus.INTERRUPTED}) == '{"state": "interrupted"}'
    assert {s for s in RunStatus if s.finished} == {"completed", "budget_exhausted"}
    assert {s for s in RunStatus if s.resumable} == {"cancelled", "interrupted"}


@pytest.mark.parametrize(
    ("status", "stop", "state", "has_error"),
    [
        ("completed", False, JobState.SUCCEEDED, False),
        ("completed", True, JobState.CANCELLED, False),  # asked to stop as the run ended
        ("budget_exhausted", False, JobState.FAILED, True),
        ("budget_exhausted", True, JobState.FAILED, True),  # the budget wins over the request
        ("cancelled", False, JobState.CANCELLED, False),
        ("interrupted", False, JobState.CANCELLED, False),
        ("failed", False, JobState.FAILED, True),
    ],
)
def test_one_mapping_from_run_status_to_job_state(
    status: str, stop: bool, state: JobState, has_error: bool
) -> None:
    got, error = job_outcome(status, stop_requested=stop)
    assert got is state
    assert (error is not None) is has_error


def test_an_unknown_or_unfinished_status_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown run status 'done'"):
        job_outcome("done")
    with pytest.raises(ConfigError, match="still 'running'"):
        job_outcome(RunStatus.RUNNING)


def test_run_result_defaults() -> None:
    result = RunResult(Path("r"), 1.0, 1e-5, 3, 1.1, 0.1, None)
    assert result.status is RunStatus.COMPLETED and result.history == [] and result.rank == 0
    names = [f.name for f in fields(RunResult)]
    assert names[:7] == [
        "run_dir", "epsilon", "delta", "steps", "noise_multiplier", "sample_rate", "report_path",
    ]  # fmt: skip


def test_jobs_imports_without_torch_or_the_trainer() -> None:
    code = (
        "import sys; import privacy_finetuner.jobs; "
        "bad = {'torch', 'privacy_finetuner.training', 'privacy_finetuner.service'} & "
        "set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
