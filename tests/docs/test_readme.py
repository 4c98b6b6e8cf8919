"""The README and docs/configuration.md as a new user follows them, run as written.

Every ```python block of the README runs in a fresh interpreter (small, CPU) and, where it ends
with ``# prints: ...``, must print that; every ``privacy-finetuner epsilon|calibrate`` command of
the README runs and must print the ``# {...}`` line under it (``...`` elides the rest of a number
or sentence). docs/configuration.md must list exactly the schema's sections, keys and defaults,
the example's values, and the CLI's exit codes.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def _expected(line: str) -> re.Pattern[str]:
    """A documented output line as a pattern: ``...`` stands for the elided rest."""
    parts = [re.escape(part) for part in line.strip().split("...")]
    return re.compile("^" + ".*?".join(parts) + "$")


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=cwd,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


PYTHON_BLOCKS = _blocks(README, "python")


def test_the_readme_has_the_documented_blocks() -> None:
    assert len(PYTHON_BLOCKS) >= 2
    assert any("make_private_with_epsilon" in block for block in PYTHON_BLOCKS)


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_readme_python_block_runs_and_prints_what_it_says(index: int, tmp_path: Path) -> None:
    code = PYTHON_BLOCKS[index]
    proc = _python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    promised = [line.split("# prints:", 1)[1] for line in code.splitlines() if "# prints:" in line]
    printed = proc.stdout.strip().splitlines()
    assert len(printed) >= len(promised)
    for expected, actual in zip(
        promised, printed[-len(promised) :] if promised else [], strict=True
    ):
        assert _expected(expected).match(actual.strip()), (expected, actual)


def _accounting_commands() -> list[tuple[list[str], str]]:
    pairs: list[tuple[list[str], str]] = []
    for block in _blocks(README, "bash"):
        lines = block.splitlines()
        for here, line in enumerate(lines):
            if re.match(r"privacy-finetuner (epsilon|calibrate) ", line):
                following = lines[here + 1] if here + 1 < len(lines) else ""
                assert following.startswith("# {"), f"no documented output under {line!r}"
                pairs.append((shlex.split(line)[1:], following[2:]))
    return pairs


ACCOUNTING = _accounting_commands()


def test_the_readme_documents_the_accounting_commands() -> None:
    assert {args[0] for args, _ in ACCOUNTING} == {"epsilon", "calibrate"}


@pytest.mark.parametrize(("args", "output"), ACCOUNTING, ids=[" ".join(a) for a, _ in ACCOUNTING])
def test_readme_accounting_command_prints_what_it_says(args: list[str], output: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "privacy_finetuner", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert _expected(output).match(proc.stdout.strip()), (output, proc.stdout)


def _documented_defaults() -> dict[str, Any]:
    blocks = [b for b in _blocks(CONFIGURATION, "yaml") if b.lstrip().startswith("data:")]
    assert len(blocks) == 1
    data = yaml.safe_load(blocks[0])
    assert isinstance(data, dict)
    return data


def _with_nulls_for_path(data: dict[str, Any]) -> dict[str, Any]:
    # The reference shows an example value for data.path (the one key whose default is unset).
    data = {**data, "data": {**data["data"], "path": None}}
    return data


def test_configuration_reference_matches_the_schema() -> None:
    from privacy_finetuner.config import JobConfig

    defaults = JobConfig.model_validate({}).model_dump(mode="json")
    documented = _with_nulls_for_path(_documented_defaults())
    assert list(documented) == list(defaults)  # every section, in order
    for section, keys in defaults.items():
        assert documented[section] == keys, section
    words = {6: "six", 7: "seven", 8: "eight", 9: "nine"}
    assert f"with {words[len(defaults)]} sections" in CONFIGURATION


def test_configuration_reference_states_the_example_values() -> None:
    from privacy_finetuner.training.examples import example_overrides

    example = example_overrides("support-agent")
    paragraph = CONFIGURATION[CONFIGURATION.index("The embedded example") :]
    stated = re.findall(r"`([a-z_.]+): ([^`]+)`", paragraph)
    assert stated
    for key, value in stated:
        node: Any = example
        for part in key.split("."):
            node = node[part]
        assert node == yaml.safe_load(value), key


def test_configuration_reference_lists_the_exit_codes() -> None:
    from privacy_finetuner.cli.main import EXIT_CODES

    table = CONFIGURATION[CONFIGURATION.index("## Exit codes") :]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", table, flags=re.M)}
    assert documented == set(EXIT_CODES)
