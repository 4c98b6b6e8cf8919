"""``torchrun --standalone --nproc-per-node 2 -m privacy_finetuner train JOB.yaml`` as a user runs it:
one result line (rank 0's), one run directory with the report of all the steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")

JOB = {
    "data": {"synthetic": {"n": 60, "seed": 0}, "max_length": 96, "validation_split": 0.0},
    "guard": {"enabled": False},
    "model": {"tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                       "intermediate_size": 64, "vocab_size": 400,
                       "tokenizer_corpus_size": 30}},
    "training": {"max_steps": 3, "batch_size": 8, "eval_tool_calls": 0},
    "privacy": {"noise_multiplier": 1.0, "target_epsilon": 20.0, "max_physical_batch_size": 8},
}  # fmt: skip


def test_torchrun_trains_one_run_with_rank0_reporting(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(JOB), encoding="utf-8")
    run = tmp_path / "run"
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    argv = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "privacy_finetuner", "train", str(job), "--output-dir", str(run), "--json",
    ]  # fmt: skip
    done = subprocess.run(
        argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout  # rank 1 prints nothing
    result = json.loads(lines[0])
    assert result["status"] == "completed" and result["steps"] == 3
    assert result["run_dir"] == str(run)
    report = json.loads((run / "privacy_report.json").read_text())
    assert report["privacy"]["steps"] == 3
    assert report["privacy"]["epsilon"] == pytest.approx(result["epsilon"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml", "run"]
