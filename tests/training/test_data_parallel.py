"""run_job on two real processes launched like torchrun (gloo on 127.0.0.1): the single-process
run's model and ε, files from rank 0 only, cancel and resume across ranks.

Rank 0 runs with the reference run's PYTHONHASHSEED and rank 1 with another, as separate
processes do: the synthetic data and tiny tokenizer depend on it, and rank 0's data must win."""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

import torch
from conftest import TINY_JOB
from launch_ranks import launch
from safetensors.torch import load_file

from privacy_finetuner.config import load_config
from privacy_finetuner.errors import CheckpointError
from privacy_finetuner.training import RunResult, run_job

JOB: dict[str, Any] = copy.deepcopy(TINY_JOB)
JOB["data"]["validation_split"] = 0.0  # no evaluation: these tests are about the DP steps
JOB["training"].update({"eval_tool_calls": 0, "checkpoint_every": 2})
JOB["privacy"]["secure_mode"] = False  # compared with the single-process run: must replay


def _summary(result: RunResult) -> dict[str, Any]:
    return {
        "status": result.status, "steps": result.steps, "epsilon": result.epsilon,
        "history": result.history, "rank": result.rank,
        "report": None if result.report_path is None else str(result.report_path),
    }  # fmt: skip


def _record_writes(root: Path) -> list[str]:
    """Python-level writes (open for writing, mkdir, rename, remove, mkstemp) under ``root``."""
    seen: list[str] = []
    prefix = str(root)
    events = {"os.mkdir", "os.rename", "os.remove", "shutil.rmtree", "tempfile.mkstemp"}

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and args and isinstance(args[0], str | os.PathLike):
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            writing = any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR)
            if writing and os.fspath(args[0]).startswith(prefix):
                seen.append(f"open {args[0]}")
        elif event in events and args and str(args[0]).startswith(prefix):
            seen.append(f"{event} {args[0]}")

    sys.addaudithook(hook)
    return seen


SEEDS = [1, 2]  # PYTHONHASHSEED of rank 0 (and of the reference run) and rank 1


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    """The reference: the same job in one process (WORLD_SIZE=1), rank 0's hash seed."""
    tmp = tmp_path_factory.mktemp("single")
    launch("_single", tmp, world=1, hash_seeds=SEEDS[:1])
    result = json.loads((tmp / "result0.json").read_text())
    return result, load_file(tmp / "run" / "model" / "model.safetensors")


def _single(rank: int, tmp: Path) -> None:
    result = run_job(load_config(None, JOB), tmp / "run")
    (tmp / f"result{rank}.json").write_text(json.dumps(_summary(result)))


def _fresh(rank: int, tmp: Path) -> None:
    if rank == 0:
        run = tmp / "run"
    else:  # another working directory and run dir: anything rank 1 wrote would show up there
        os.chdir(tmp / "rank1_cwd")
        run = tmp / "rank1_run"
    result = run_job(load_config(None, JOB), run, progress=True)
    (tmp / f"result{rank}.json").write_text(json.dumps(_summary(result)))


def _cancel_after_two(rank: int, tmp: Path) -> None:
    polls = {"n": 0}

    def should_stop() -> bool:
        assert rank == 0, "only rank 0 polls should_stop"
        polls["n"] += 1
        return polls["n"] == 3

    result = run_job(load_config(None, JOB), tmp / "run", should_stop=should_stop)
    (tmp / f"cancel{rank}.json").write_text(json.dumps(_summary(result)))


def _resume(rank: int, tmp: Path) -> None:
    writes = _record_writes(tmp) if rank != 0 else []
    events: list[dict[str, Any]] = []
    result = run_job(load_config(None, JOB), tmp / "run", resume=True, on_event=events.append)
    summary = {**_summary(result), "writes": list(writes), "events": [e["step"] for e in events]}
    (tmp / f"resume{rank}.json").write_text(json.dumps(summary))


def _resume_unseen(rank: int, tmp: Path) -> None:
    run = tmp / ("run" if rank == 0 else "not-shared")  # as if rank 1 were on another node
    try:
        run_job(load_config(None, JOB), run, resume=True)
    except CheckpointError as exc:
        (tmp / f"error{rank}.txt").write_text(str(exc))


def _close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for name, w in want.items():
        scale = float(w.abs().max().clamp_min(1e-12))
        assert float((got[name] - w).abs().max()) / scale < 1e-5, name


def test_two_ranks_train_the_single_process_model_and_only_rank0_writes(
    tmp_path: Path, single: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    """Same seed, noise on: rank 0 samples and draws the noise from the generators the
    single-process run uses, so the model and ε are that run's (to float rounding)."""
    (tmp_path / "rank1_cwd").mkdir()
    launch("_fresh", tmp_path, hash_seeds=SEEDS)
    one, model = single
    ranks = [json.loads((tmp_path / f"result{r}.json").read_text()) for r in range(2)]
    for r, got in enumerate(ranks):
        assert got["rank"] == r and got["status"] == "completed" and got["steps"] == 4
        assert got["history"] == one["history"]
        assert got["epsilon"] == pytest.approx(one["epsilon"])
    assert ranks[0]["report"] == str(tmp_path / "run" / "privacy_report.json")
    report = json.loads((tmp_path / "run" / "privacy_report.json").read_text())
    assert report["privacy"]["steps"] == 4 and report["status"] == "completed"
    _close(load_file(tmp_path / "run" / "model" / "model.safetensors"), model)
    assert ranks[1]["report"] is None
    assert not (tmp_path / "rank1_run").exists()
    assert list((tmp_path / "rank1_cwd").iterdir()) == []


def test_cancel_and_resume_across_ranks_continue_the_same_run(
    tmp_path: Path, single: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    """Rank 0's checkpoint holds what every rank needs (replicas are identical, only rank 0's
    sampler and noise generators are ever used), so the resumed run is the uninterrupted one."""
    launch("_cancel_after_two", tmp_path, hash_seeds=SEEDS)
    for r in range(2):
        got = json.loads((tmp_path / f"cancel{r}.json").read_text())
        assert (got["status"], got["steps"], got["report"]) == ("cancelled", 2, None)
    assert (tmp_path / "run" / "checkpoint" / "engine.pt").is_file()
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "cancelled"

    launch("_resume", tmp_path, hash_seeds=SEEDS)
    one, model = single
    ranks = [json.loads((tmp_path / f"resume{r}.json").read_text()) for r in range(2)]
    for got in ranks:
        assert got["status"] == "completed" and got["steps"] == 4
        assert got["history"] == one["history"]
        assert got["epsilon"] == pytest.approx(one["epsilon"])
    assert ranks[0]["events"] == [3, 4] and ranks[1]["events"] == []  # hooks: rank 0 only
    assert ranks[1]["writes"] == []
    _close(load_file(tmp_path / "run" / "model" / "model.safetensors"), model)
    assert not (tmp_path / "run" / "RUN_INCOMPLETE").exists()


def test_resume_says_which_ranks_cannot_read_the_run_directory(tmp_path: Path) -> None:
    for name in ("config.yaml", "checkpoint/engine.pt", "tokenizer/tokenizer.json"):
        (tmp_path / "run" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "run" / name).write_text("{}")
    launch("_resume_unseen", tmp_path, hash_seeds=SEEDS)
    for rank in range(2):  # both ranks stop with the same message, before anything is loaded
        message = (tmp_path / f"error{rank}.txt").read_text()
        assert "rank(s) 1 cannot read" in message and "storage all nodes share" in message
