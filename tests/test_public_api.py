"""The public surface: curated sorted __all__, version in step, core imports without torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import privacy_finetuner
import privacy_finetuner.errors as errors

ROOT = Path(__file__).resolve().parents[1]


def test_all_is_sorted_and_resolves() -> None:
    assert privacy_finetuner.__all__ == sorted(privacy_finetuner.__all__, key=str.casefold)
    for name in privacy_finetuner.__all__:
        if name != "PrivacyEngine":  # lazily imported; needs the train extra
            assert getattr(privacy_finetuner, name) is not None


def test_version_matches_pyproject() -> None:
    match = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert match is not None
    assert match.group(1) == privacy_finetuner.__version__


def test_every_error_derives_from_the_root() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        if name == "PrivacyWarning":
            assert issubclass(cls, UserWarning)
        else:
            assert issubclass(cls, errors.PrivacyFinetunerError), name


def test_core_imports_without_torch() -> None:
    code = (
        "import sys; import privacy_finetuner, privacy_finetuner.accounting, "
        "privacy_finetuner.cli.main, privacy_finetuner.errors; "
        "assert 'torch' not in sys.modules, 'torch imported by the core'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
