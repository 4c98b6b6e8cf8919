"""The epsilon / calibrate commands: JSON output, agreement with dp-accounting, exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from privacy_finetuner.accounting import DpSegment, compute_epsilon


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "privacy_finetuner", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_epsilon_json_agrees_with_library(accountant: str) -> None:
    proc = _run(
        "epsilon", "--noise-multiplier", "1.0", "--sample-rate", "0.01", "--steps", "1000",
        "--delta", "1e-5", "--accountant", accountant, "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) == {"epsilon", "delta", "accountant", "method"}
    assert data["method"] == accountant
    expected = compute_epsilon([DpSegment(1.0, 0.01, 1000)], delta=1e-5, accountant=accountant)
    assert data["epsilon"] == pytest.approx(expected, rel=1e-9)
    assert data["accountant"] == accountant


def test_calibrate_json() -> None:
    proc = _run(
        "calibrate", "--target-epsilon", "3", "--delta", "1e-5", "--sample-rate", "0.01",
        "--steps", "1000", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["epsilon"] <= 3
    assert data["epsilon"] == pytest.approx(3, rel=1e-2)


def test_table_output() -> None:
    proc = _run("epsilon", "-s", "1.0", "-q", "0.01", "--steps", "100")
    assert proc.returncode == 0
    assert "ε" in proc.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["epsilon", "--noise-multiplier", "0", "--sample-rate", "0.01", "--steps", "10"],
        ["epsilon", "--noise-multiplier", "-1", "--sample-rate", "0.01", "--steps", "10"],
        ["epsilon", "--noise-multiplier", "1", "--sample-rate", "0", "--steps", "10"],
        ["epsilon", "--noise-multiplier", "1", "--sample-rate", "1.5", "--steps", "10"],
        ["epsilon", "--noise-multiplier", "1", "--sample-rate", "0.1", "--steps", "0"],
        [
            "epsilon",
            "--noise-multiplier",
            "1",
            "--sample-rate",
            "0.1",
            "--steps",
            "10",
            "--delta",
            "1",
        ],
        [
            "epsilon",
            "--noise-multiplier",
            "1",
            "--sample-rate",
            "0.1",
            "--steps",
            "10",
            "--accountant",
            "gdp",
        ],
        ["calibrate", "--target-epsilon", "-1", "--sample-rate", "0.1", "--steps", "10"],
        ["epsilon", "--noise-multiplier", "abc", "--sample-rate", "0.1", "--steps", "10"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str]) -> None:
    proc = _run(*args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.strip()


def test_version() -> None:
    proc = _run("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("privacy-finetuner ")


def test_tiny_noise_answers_with_a_bounded_upper_bound() -> None:
    # Used to grow past 16 GB (σ 0.05) or die allocating 71 PiB (σ 1e-3, 10⁶ steps).
    for sigma, steps, method in (("0.05", "100", "pld-coarse"), ("1e-3", "1000000", "rdp")):
        proc = _run(
            "epsilon", "--noise-multiplier", sigma, "--sample-rate", "1", "--steps", steps,
            "--json",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        assert data["method"] == method
        assert "upper bound" in data["note"]
    table = _run("epsilon", "-s", "0.05", "-q", "1", "--steps", "100")
    assert table.returncode == 0
    assert "pld-coarse" in table.stdout and "note:" in table.stdout


def test_no_hugging_face_progress_bars_when_stderr_is_not_a_terminal() -> None:
    code = (
        "import os\n"
        "from privacy_finetuner.cli.main import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "print(os.environ.get('HF_HUB_DISABLE_PROGRESS_BARS'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "1"
