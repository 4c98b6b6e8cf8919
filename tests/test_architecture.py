"""The import rules of ``docs/ARCHITECTURE.md``, checked on the source with an AST walk.

Three rules: a subpackage imports only the layers below it (so the data flow stays one way and no
two packages import each other); no module imports another package's private module or name
(``accounting._validation``, ``guard._model``); and the core (``errors``, ``accounting``,
``config``, ``cli``, ``jobs`` and the package root) reaches no torch-stack library through its
module-level imports, so ``import privacy_finetuner`` and the CLI stay cheap. Lazy imports inside
functions count for the layer rule (a dependency is a dependency) but not for the torch rule.

The checker is an ordinary function over a directory, so the tests below also run it on a planted
tree and watch it fail.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "privacy_finetuner"

_BASE = frozenset({"errors", "_version"})
_LOWER = _BASE | {
    "accounting", "config", "data", "guard", "report", "engine", "modeling", "ledger", "jobs",
}  # fmt: skip

#: Layer (a subpackage or top-level module) → the layers it may import. Its own modules are always
#: allowed. Read with docs/ARCHITECTURE.md "Rules that keep the flow one-way".
ALLOWED: dict[str, frozenset[str]] = {
    "_version": frozenset(),
    "errors": frozenset(),
    # the job-function protocol, result and status: torch-free, below every wiring layer
    "jobs": _BASE | {"accounting", "config"},
    # "accounting, config, data, guard and report import only errors (and accounting)"
    "accounting": _BASE,
    "config": _BASE | {"accounting"},
    "data": _BASE | {"accounting"},
    "guard": _BASE | {"accounting"},
    "report": _BASE | {"accounting"},
    # "engine knows nothing of data files or configs"
    "engine": _BASE | {"accounting"},
    # "ledger knows accounting but not training"; its job states are the jobs.py vocabulary
    "ledger": _BASE | {"accounting", "jobs"},
    # loading a model by config; the tiny model's tokenizer is trained on traces it is handed
    "modeling": _BASE | {"accounting", "config"},
    # the wiring layers; training runs the audit of a run trained with canaries, never the reverse
    "audit": _LOWER,
    "training": _LOWER | {"audit"},
    "federated": _LOWER | {"audit", "training"},
    # "service reaches training only through the configured job function (PF_JOB_FUNCTION)"
    "service": _LOWER,
    "cli": _LOWER | {"audit", "training", "federated", "service"},
    # the root re-exports the public surface; PrivacyEngine is loaded on first use
    "": _BASE | {"accounting", "engine", "jobs"},
    "__main__": frozenset({"cli"}),
}

#: Importable without torch: module-level imports of these layers must not reach HEAVY.
CORE = frozenset({"", "errors", "accounting", "config", "cli", "jobs", "_version"})
HEAVY = frozenset({"torch", "transformers", "peft", "accelerate", "opacus", "flwr", "ray"})

#: Known violations that can only be fixed in another owner's code, each with its issue. The
#: layering test fails if one of these disappears too (so the list cannot go stale).
ALLOW_LIST: frozenset[tuple[str, str]] = frozenset(
    {
        # issue 19: load_base_model builds the tiny tokenizer's default corpus with the synthetic
        # generator; the fix is for training/federated to pass tokenizer_corpus (not an import
        # line), after which modeling no longer needs data.
        ("privacy_finetuner.modeling.loading", "privacy_finetuner.data.synth"),
    }
)


@dataclass(frozen=True)
class Import:
    """One import statement's target, as seen from the module that holds it."""

    module: str  # dotted name of the importing module
    target: str  # dotted name of the imported module (or of the package a name comes from)
    name: str | None  # the name taken by ``from target import name``, None for ``import target``
    line: int
    module_level: bool  # executed on import: not inside a function or ``if TYPE_CHECKING``

    def where(self, root: Path) -> str:
        """``path:line`` of the statement, relative to ``root``'s parent."""
        return f"{module_path(root, self.module).relative_to(root.parent)}:{self.line}"


def module_name(root: Path, path: Path) -> str:
    """``root/a/b.py`` → ``pkg.a.b``; ``root/a/__init__.py`` → ``pkg.a``."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_path(root: Path, dotted: str) -> Path:
    """The file of a module of the package (``__init__.py`` for a package)."""
    rel = Path(*dotted.split(".")[1:]) if "." in dotted else Path()
    package = root / rel / "__init__.py"
    return package if package.is_file() else (root / rel).with_suffix(".py")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(tree: ast.Module) -> Iterable[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it runs at import time."""

    def walk(nodes: list[ast.stmt], module_level: bool) -> Iterable[tuple[ast.stmt, bool]]:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node, module_level
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield from walk(node.body, False)
            elif isinstance(node, ast.If):
                yield from walk(node.body, module_level and not _is_type_checking(node.test))
                yield from walk(node.orelse, module_level)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    children = getattr(node, field, None)
                    if isinstance(children, list):
                        nested = [c for c in children if isinstance(c, ast.stmt)]
                        handlers = [c for c in children if isinstance(c, ast.ExceptHandler)]
                        yield from walk(nested, module_level)
                        for handler in handlers:
                            yield from walk(handler.body, module_level)

    for node, module_level in walk(tree.body, True):
        assert isinstance(node, (ast.Import, ast.ImportFrom))
        yield node, module_level


def collect_imports(root: Path) -> list[Import]:
    """All imports of the package rooted at ``root`` (a directory holding ``__init__.py``)."""
    found: list[Import] = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(root, path)
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, module_level in _statements(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.append(Import(module, alias.name, None, node.lineno, module_level))
                continue
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                found.append(Import(module, target, alias.name, node.lineno, module_level))
    return found


def _resolve(root: Path, imp: Import) -> str:
    """The package module an import loads: ``from pkg.a import b`` is ``pkg.a.b`` when ``b`` is
    a submodule, else ``pkg.a``."""
    if imp.name is not None and imp.name != "*":
        candidate = f"{imp.target}.{imp.name}"
        if module_path(root, candidate).is_file():
            return candidate
    return imp.target


def layer_of(root: Path, dotted: str) -> str:
    """``pkg.accounting.epsilon`` → ``accounting``; ``pkg.errors`` → ``errors``; ``pkg`` → ``""``."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ""


def _internal(root: Path, imports: Iterable[Import]) -> Iterable[tuple[Import, str]]:
    for imp in imports:
        if imp.target == root.name or imp.target.startswith(root.name + "."):
            yield imp, _resolve(root, imp)


def layering_violations(
    root: Path, allowed: Mapping[str, frozenset[str]], imports: list[Import]
) -> set[tuple[str, str, str]]:
    """(importer, imported, where) for each import of a layer the importer may not use."""
    bad = set()
    for imp, target in _internal(root, imports):
        source, dest = layer_of(root, imp.module), layer_of(root, target)
        if source == dest:
            continue
        if source not in allowed:
            bad.add((imp.module, target, f"{imp.where(root)}: layer {source!r} has no rule"))
        elif dest not in allowed[source]:
            bad.add((imp.module, target, f"{imp.where(root)}: {source} must not import {dest}"))
    return bad


def private_violations(root: Path, imports: list[Import]) -> set[tuple[str, str, str]]:
    """(importer, imported, where) for each import of another layer's private module or name."""
    bad = set()
    for imp, target in _internal(root, imports):
        source, dest = layer_of(root, imp.module), layer_of(root, target)
        if source == dest or dest == "_version":  # the version module is the root's, by design
            continue
        inner = target.split(".")[2:]
        private_name = (
            imp.name is not None
            and imp.name.startswith("_")
            and not imp.name.startswith("__")
            and target == imp.target
        )
        if any(p.startswith("_") for p in inner) or private_name:
            shown = f"{target}.{imp.name}" if private_name else target
            bad.add((imp.module, target, f"{imp.where(root)}: private {shown} of {dest}"))
    return bad


def heavy_imports_of_core(
    root: Path, core: frozenset[str], heavy: frozenset[str], imports: list[Import]
) -> set[tuple[str, str, str]]:
    """(core module, heavy library, chain) for each torch-stack library a core module loads at
    import time, following module-level imports through the package (and parent packages)."""
    by_module: dict[str, list[Import]] = {}
    for imp in imports:
        if imp.module_level:
            by_module.setdefault(imp.module, []).append(imp)

    def loads(module: str) -> list[str]:
        """Package modules loaded by importing ``module``: its parents' ``__init__`` too."""
        parts = module.split(".")
        return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]

    bad = set()
    for start in sorted(by_module):
        if layer_of(root, start) not in core:
            continue
        seen: dict[str, str] = {start: start}
        todo = [start]
        while todo:
            current = todo.pop()
            for imp in by_module.get(current, []):
                top = imp.target.split(".")[0]
                if top in heavy:
                    bad.add((start, top, f"{seen[current]} → {imp.target} ({imp.where(root)})"))
                    continue
                if top != root.name:
                    continue
                for loaded in loads(_resolve(root, imp)):
                    if loaded not in seen and module_path(root, loaded).is_file():
                        seen[loaded] = f"{seen[current]} → {loaded}"
                        todo.append(loaded)
    return bad


def check_tree(
    root: Path,
    *,
    allowed: Mapping[str, frozenset[str]] = ALLOWED,
    core: frozenset[str] = CORE,
    heavy: frozenset[str] = HEAVY,
    allow_list: frozenset[tuple[str, str]] = frozenset(),
) -> list[str]:
    """Every violation of the three rules in the package at ``root``, one line each, minus the
    allow-listed (importer, imported) pairs."""
    imports = collect_imports(root)
    found = layering_violations(root, allowed, imports) | private_violations(root, imports)
    lines = [where for source, target, where in found if (source, target) not in allow_list]
    lines += [
        f"core module {start} imports {lib} at import time: {chain}"
        for start, lib, chain in heavy_imports_of_core(root, core, heavy, imports)
    ]
    return sorted(lines)


def allow_listed_found(root: Path) -> set[tuple[str, str]]:
    """The allow-list entries that are still real violations."""
    imports = collect_imports(root)
    found = layering_violations(root, ALLOWED, imports) | private_violations(root, imports)
    return {(s, t) for s, t, _ in found} & ALLOW_LIST


# -- the real tree -------------------------------------------------------------------------------


def test_the_package_follows_the_import_rules() -> None:
    violations = check_tree(ROOT / PACKAGE, allow_list=ALLOW_LIST)
    assert violations == [], "\n".join(violations)


def test_the_allow_list_is_not_stale() -> None:
    assert allow_listed_found(ROOT / PACKAGE) == ALLOW_LIST


def test_every_layer_of_the_package_has_a_rule() -> None:
    root = ROOT / PACKAGE
    layers = {layer_of(root, module_name(root, p)) for p in root.rglob("*.py")}
    assert layers <= set(ALLOWED), sorted(layers - set(ALLOWED))


def test_the_rules_form_no_cycle() -> None:
    """If a layer could reach itself through the allowed imports, two packages could import
    each other (the audit ↔ training cycle) without the layering test noticing."""

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in ALLOWED.get(todo.pop(), frozenset()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    assert [layer for layer in ALLOWED if layer in reachable(layer)] == []


# -- the checker catches planted violations ------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / PACKAGE
    for rel, text in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for directory in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()
    return root


_CLEAN = {
    "errors.py": "class PrivacyFinetunerError(Exception): ...\n",
    "accounting/epsilon.py": "from privacy_finetuner.errors import PrivacyFinetunerError\n",
    "training/pipeline.py": (
        "from privacy_finetuner.accounting import epsilon\n"
        "def run():\n    import torch\n    from privacy_finetuner.audit.runner import finish_audit\n"
    ),
    "audit/runner.py": "import numpy\nfrom .scoring import score\n",
    "audit/scoring.py": "def score():\n    import torch\n",
}


def test_a_clean_planted_tree_passes(tmp_path: Path) -> None:
    assert check_tree(_tree(tmp_path, _CLEAN)) == []


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(  # a lower layer importing a higher one, lazily
            {"accounting/epsilon.py": "def f():\n    from privacy_finetuner.training import x\n"},
            "accounting must not import training",
            id="lower-imports-higher",
        ),
        pytest.param(  # the cycle of issue 19, through a relative import
            {"audit/runner.py": "from ..training.pipeline import run\n"},
            "audit must not import training",
            id="audit-training-cycle",
        ),
        pytest.param(
            {"service/runner.py": "from privacy_finetuner.training import run_job\n"},
            "service must not import training",
            id="service-imports-training",
        ),
        pytest.param(
            {"ledger/store.py": "from privacy_finetuner.accounting._validation import check\n"},
            "private privacy_finetuner.accounting._validation of accounting",
            id="private-module",
        ),
        pytest.param(
            {"audit/compliance.py": "from privacy_finetuner.guard import _model\n"},
            "private privacy_finetuner.guard._model of guard",
            id="private-module-as-name",
        ),
        pytest.param(
            {"cli/main.py": "from privacy_finetuner.accounting.epsilon import _grid\n"},
            "private privacy_finetuner.accounting.epsilon._grid of accounting",
            id="private-name",
        ),
        pytest.param(  # torch two hops away from the core, at import time
            {
                "cli/main.py": "from privacy_finetuner.engine import step\n",
                "engine/step.py": "import torch.nn\n",
            },
            "core module privacy_finetuner.cli.main imports torch at import time",
            id="core-reaches-torch",
        ),
        pytest.param(  # through a parent package's __init__
            {
                "config/schema.py": "from privacy_finetuner.accounting.epsilon import x\n",
                "accounting/__init__.py": "try:\n    import transformers\nexcept ImportError:\n"
                "    pass\n",
            },
            "core module privacy_finetuner.config.schema imports transformers",
            id="core-reaches-heavy-via-init",
        ),
        pytest.param(
            {"newlayer/x.py": "from privacy_finetuner.errors import PrivacyFinetunerError\n"},
            "layer 'newlayer' has no rule",
            id="unknown-layer",
        ),
    ],
)
def test_the_checker_catches_a_planted_violation(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    violations = check_tree(_tree(tmp_path, {**_CLEAN, **files}))
    assert any(expected in v for v in violations), violations


def test_type_checking_and_function_imports_do_not_count_for_torch(tmp_path: Path) -> None:
    files = {
        "cli/main.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n"
            "def train():\n    import torch\n"
        ),
    }
    assert check_tree(_tree(tmp_path, {**_CLEAN, **files})) == []


def test_the_allow_list_silences_only_its_pair(tmp_path: Path) -> None:
    files = {
        "modeling/loading.py": "from privacy_finetuner.data.synth import generate\n",
        "modeling/other.py": "from privacy_finetuner.data.records import Trace\n",
    }
    root = _tree(tmp_path, {**_CLEAN, **files})
    pair = ("privacy_finetuner.modeling.loading", "privacy_finetuner.data.synth")
    violations = check_tree(root, allow_list=frozenset({pair}))
    assert len(violations) == 1 and "modeling/other.py:1" in violations[0]
