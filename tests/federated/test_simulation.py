"""Small end-to-end federations through the CLI (Flower's Ray simulation, ~40 s each).

One with SecAgg+ (the server must only ever receive the aggregate) and one with local DP-SGD,
Poisson cohorts and no SecAgg+ (every update visible, each client's local ε accounted).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("flwr", reason="the federated extra (Python 3.11+)")
pytest.importorskip("ray", reason="flwr[simulation]")
pytest.importorskip("torch")

from privacy_finetuner.accounting import DpSegment, compute_epsilon
from privacy_finetuner.config import load_config

pytestmark = pytest.mark.slow

JOB: dict[str, Any] = {
    "data": {"synthetic": {"n": 150, "seed": 0}, "max_length": 96, "validation_split": 0.2},
    "guard": {"enabled": False},
    "model": {
        "name": "tiny",
        "finetuning": "lora",
        "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
                 "vocab_size": 400, "tokenizer_corpus_size": 30},
        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj", "lm_head"]},
    },
    "training": {"optimizer": "sgd", "learning_rate": 0.2, "batch_size": 8, "seed": 0},
    "privacy": {"target_epsilon": 8.0, "delta": 1e-5, "max_grad_norm": 1.0,
                "max_physical_batch_size": 8},
    "federated": {"clients": 3, "rounds": 2, "target_epsilon": 50.0, "clipping_norm": 0.5,
                  "local_steps": 5},
}  # fmt: skip


def _simulate(tmp_path: Path, *args: str) -> tuple[dict[str, Any], dict[str, Any], Path]:
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(JOB), encoding="utf-8")
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "privacy_finetuner", "federated", "simulate", str(config),
         "--output-dir", str(run), "--json", *args],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    report = json.loads((run / "federated_report.json").read_text(encoding="utf-8"))
    return summary, report, run


def test_secagg_federation_improves_the_model_and_the_server_only_sees_sums(
    tmp_path: Path,
) -> None:
    summary, report, run = _simulate(tmp_path)
    cl = report["client_level"]
    assert cl["secure_aggregation"] and cl["sampling"] == "fixed"
    sigma = cl["noise_multiplier"]
    for r, record in enumerate(report["rounds"], 1):
        assert (record["sampled"], record["aggregated"], record["failures"]) == (3, 3, 0)
        assert record["distinct_payloads"] == 1  # SecAgg+: only the aggregate reached the server
        expected = compute_epsilon([DpSegment(sigma, 1.0, r)], delta=1e-5)
        assert record["epsilon"] == pytest.approx(expected, rel=1e-9)
    assert summary["client_epsilon"] == pytest.approx(50.0, rel=2e-3)
    assert cl["client_clipping_norm"] < 0.5  # clipped below C for SecAgg+'s quantisation
    internal = json.loads((run / "internal_diagnostics.json").read_text(encoding="utf-8"))
    base, final = internal["validation"]["base_loss"], internal["validation"]["final_loss"]
    released = (run / "federated_report.json").read_text(encoding="utf-8")
    assert (
        "validation_loss" not in released
        and repr(final) not in released
        and repr(base) not in released
    )
    assert final < base - 0.2, (base, final)
    assert summary["base_validation_loss"] == base and summary["validation_loss"] == final

    # The saved adapter is the evaluated one: same validation loss after reloading it.
    from privacy_finetuner.modeling.loading import load_trained
    from privacy_finetuner.training.evaluation import validation_loss
    from privacy_finetuner.training.prepare import prepare_data

    prepared = prepare_data(load_config(run / "config.yaml"))
    loaded = load_trained(run)
    loss = validation_loss(
        loaded.model, prepared.validation, pad_token_id=loaded.tokenizer.pad_token_id
    )
    assert loss == pytest.approx(final, rel=1e-4)
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    assert not list(run.rglob("client-*.jsonl"))  # no copy of the training data is kept


def test_local_dp_without_secagg_reports_each_clients_local_epsilon(tmp_path: Path) -> None:
    from privacy_finetuner.federated.local import local_noise_multiplier

    _, report, run = _simulate(
        tmp_path,
        "--local-dp", "--no-secagg", "--set", "federated.sampling=poisson",
        "--set", "federated.clients_per_round=2",
    )  # fmt: skip
    assert report["client_level"]["sample_rate"] == pytest.approx(2 / 3)
    job = load_config(run / "config.yaml")
    # What each client's local accountant must say after k participations of 5 DP-SGD steps.
    possible = set()
    assert "examples_per_client" not in report["simulation"]  # private counts: internal only
    internal = json.loads((run / "internal_diagnostics.json").read_text(encoding="utf-8"))
    for n in internal["simulation"]["examples_per_client"]:
        sigma, q = local_noise_multiplier(job, n)
        for k in (1, 2):
            possible.add(round(compute_epsilon([DpSegment(sigma, q, 5 * k)], delta=1e-5), 9))
    seen = [r for r in report["rounds"] if r["aggregated"]]
    assert seen, "no round drew a client"
    for record in report["rounds"]:
        assert record["distinct_payloads"] == record["aggregated"]  # plain: every update seen
        if record["aggregated"]:
            assert round(record["local_epsilon_max"], 9) in possible
            assert record["local_epsilon_max"] <= 8.0
    assert report["local_dp"]["enabled"] and report["local_dp"]["epsilon_max"] <= 8.0
