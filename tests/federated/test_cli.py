"""``privacy-finetuner federated plan|app`` and the one-line errors of ``simulate``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from privacy_finetuner.accounting import DpSegment, compute_epsilon
from privacy_finetuner.config import load_config
from privacy_finetuner.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "federated" / "job.yaml"


def _run(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "privacy_finetuner", *args]
    if code is not None:
        command = [sys.executable, "-c", code, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_plan_json_matches_dp_accounting() -> None:
    proc = _run("federated", "plan", str(EXAMPLE), "--clients", "20", "--rounds", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert (plan["num_clients"], plan["rounds"], plan["sample_rate"]) == (20, 5, 1.0)
    sigma = plan["noise_multiplier"]
    for r, eps in enumerate(plan["epsilon_per_round"], 1):
        assert eps == pytest.approx(compute_epsilon([DpSegment(sigma, 1.0, r)], delta=1e-5))
    assert plan["epsilon_per_round"][-1] == pytest.approx(8.0, rel=1e-3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--clients", "4", "--set", "federated.clients_per_round=5"], "exceeds the number"),
        (["--set", "federated.sampling=poisson", "--set", "federated.clients_per_round=3"],
         "poisson with secure_aggregation"),
        (["--set", "federated.rounds=0"], "federated.rounds"),
        (["--set", "audit.enabled=true"], "not available for federated runs"),
    ],
)  # fmt: skip
def test_bad_federated_settings_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    proc = _run("federated", "simulate", str(EXAMPLE), *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], proc.stderr


def test_simulate_without_flower_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['flwr'] = None; "
        "from privacy_finetuner.cli.main import main; main(sys.argv[1:])"
    )
    proc = _run("federated", "simulate", str(EXAMPLE), code=code)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: Federated fine-tuning (Flower, Python 3.11+) needs the 'federated' extra: "
        "pip install 'privacy-finetuner[federated]'"
    ]


def test_app_writes_a_flower_app_that_flower_accepts(tmp_path: Path) -> None:
    pytest.importorskip("flwr", reason="the federated extra (Python 3.11+)")
    from flwr.cli.config_utils import load_and_validate

    from privacy_finetuner.federated.inputs import job_from_text

    proc = _run(
        "federated",
        "app",
        str(tmp_path / "app"),
        str(EXAMPLE),
        "--validation-path",
        "/data/v.jsonl",
    )
    assert proc.returncode == 0, proc.stderr
    config, _ = load_and_validate(tmp_path / "app" / "pyproject.toml", check_module=True)
    app = config["tool"]["flwr"]["app"]
    assert app["components"]["serverapp"] == "privacy_finetuner.federated.server_app:app"
    assert job_from_text(app["config"]["job"]) == load_config(EXAMPLE)
    assert app["config"]["validation-path"] == "/data/v.jsonl"


def test_job_text_errors_name_the_key() -> None:
    from privacy_finetuner.federated.inputs import job_from_text

    with pytest.raises(ConfigError, match="run config 'job' is missing"):
        job_from_text(None)
    with pytest.raises(ConfigError, match=r"federated\.clients"):
        job_from_text("federated: {clients: 1}")
    with pytest.raises(ConfigError, match="mapping of sections"):
        job_from_text("- a list")
