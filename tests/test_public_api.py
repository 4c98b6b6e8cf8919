"""The public surface: curated, complete and sorted ``__all__``, version in step, every error
class in use, the core importable without torch."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import privacy_finetuner
import privacy_finetuner.errors as errors

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "privacy_finetuner"
LAZY_ROOT_NAMES = {"PrivacyEngine"}  # provided by the root's __getattr__ (needs the train extra)


def _declared_all(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            assert isinstance(node, ast.Assign)
            value = ast.literal_eval(node.value)
            assert isinstance(value, list)
            return [str(v) for v in value]
    return None


def _reexports(init: Path, root: Path = ROOT) -> tuple[set[str], set[str]]:
    """(names an ``__init__`` imports from its own package, names it binds at all)."""
    package = ".".join(init.parent.relative_to(root).parts)
    own_prefixes = (package + ".",) if package != "privacy_finetuner" else ("privacy_finetuner.",)
    tree = ast.parse(init.read_text(encoding="utf-8"))
    reexported: set[str] = set()
    bound: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            names = {a.asname or a.name for a in node.names}
            bound |= names
            if node.module.startswith(own_prefixes) and not node.module.endswith(".errors"):
                reexported |= names
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.Assign):
            bound |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return reexported, bound


def test_all_is_sorted_and_resolves() -> None:
    assert privacy_finetuner.__all__ == sorted(privacy_finetuner.__all__, key=str.casefold)
    for name in privacy_finetuner.__all__:
        if name not in LAZY_ROOT_NAMES:  # lazily imported; needs the train extra
            assert getattr(privacy_finetuner, name) is not None


def all_problems(init: Path, *, root: Path = ROOT, lazy: frozenset[str] = frozenset()) -> list[str]:
    """Why an ``__init__``'s ``__all__`` is not exactly what it re-exports from its package."""
    declared = _declared_all(ast.parse(init.read_text(encoding="utf-8")))
    if declared is None:
        return []
    reexported, bound = _reexports(init, root)
    where = init.relative_to(root)
    problems = []
    if missing := sorted(reexported - set(declared)):
        problems.append(f"{where}: imported but not in __all__: {missing}")
    if unbound := sorted(set(declared) - bound - lazy):
        problems.append(f"{where}: in __all__ but never bound: {unbound}")
    if len(set(declared)) != len(declared):
        problems.append(f"{where}: __all__ lists a name twice")
    return problems


def test_every_package_all_is_complete() -> None:
    """Each ``__init__``'s ``__all__`` lists exactly what it re-exports from its own package
    (a name imported but left out is an accident of the API; one listed but never bound fails
    ``from … import *``)."""
    problems = [
        problem
        for init in sorted(PACKAGE.rglob("__init__.py"))
        for problem in all_problems(
            init, lazy=frozenset(LAZY_ROOT_NAMES) if init.parent == PACKAGE else frozenset()
        )
    ]
    assert problems == [], "\n".join(problems)


def test_the_completeness_check_catches_omissions(tmp_path: Path) -> None:
    init = tmp_path / "privacy_finetuner" / "audit" / "__init__.py"
    init.parent.mkdir(parents=True)
    init.write_text(
        "from privacy_finetuner.audit.mia import roc_auc, roc_curve\n"
        "from privacy_finetuner.errors import DataError\n"  # used, not re-exported: fine
        "__all__ = ['roc_auc', 'tpr_at_fpr', 'roc_auc']\n",
        encoding="utf-8",
    )
    problems = all_problems(init, root=tmp_path)
    assert any("not in __all__: ['roc_curve']" in p for p in problems), problems
    assert any("never bound: ['tpr_at_fpr']" in p for p in problems), problems
    assert any("twice" in p for p in problems), problems
    assert not any("DataError" in p for p in problems)


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


def test_errors_all_is_complete_and_every_error_is_used() -> None:
    """Every class of the hierarchy is exported, and each is raised, caught or subclassed
    somewhere in the package: an error nothing raises is a promise the API does not keep."""
    tree = ast.parse((PACKAGE / "errors.py").read_text(encoding="utf-8"))
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    assert set(errors.__all__) == set(classes)
    parents = {b.id for n in classes.values() for b in n.bases if isinstance(b, ast.Name)}
    used: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        if path.name == "errors.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Name):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
    unused = sorted(set(classes) - used - parents)
    assert unused == [], f"error classes nothing raises, catches or subclasses: {unused}"


def test_core_imports_without_torch() -> None:
    code = (
        "import sys; import privacy_finetuner, privacy_finetuner.accounting, "
        "privacy_finetuner.cli.main, privacy_finetuner.errors, privacy_finetuner.jobs; "
        "assert 'torch' not in sys.modules, 'torch imported by the core'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
