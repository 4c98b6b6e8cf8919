"""The guard benchmark's evaluation sets load and its scoring counts what it says it counts."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_guard", ROOT / "benchmarks/bench_guard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_external_sets_load_with_their_splits() -> None:
    bench = _bench()
    test, dev = bench.load_research("test"), bench.load_research("dev")
    assert len(test) + len(dev) == 1500 and len(test) > 600 and len(dev) > 600
    assert {s["type"] for r in test for s in r["spans"]} <= set(bench.RESEARCH_TYPES.values())
    assert any(r["ignore"] for r in test)  # out-of-scope labels are kept aside, not dropped
    cases = bench.load_cases()
    assert len(cases) > 500 and any(not c["spans"] for c in cases)


def test_scoring_of_perfect_empty_and_out_of_scope_predictions() -> None:
    bench = _bench()
    record = {
        "text": "Jane Roe works at Acme in Paris",
        "spans": [{"start": 0, "end": 8, "type": "PERSON"}],
        "ignore": [{"start": 18, "end": 22, "type": ""}],
    }
    perfect = bench.score([record], [[(0, 8)]])
    assert perfect["leak_rate"] == 0.0 and perfect["precision"] == 1.0
    partial = bench.score([record], [[(0, 4)]])  # "Roe" stays readable
    assert partial["leak_rate"] == 1.0 and partial["precision"] == 1.0
    neutral = bench.score([record], [[(0, 8), (18, 22)]])  # a hit on an ignored span is neutral
    assert neutral["precision"] == 1.0 and neutral["detections"] == 1
    wrong = bench.score([record], [[(0, 8), (26, 31)]])
    assert wrong["precision"] == 0.5 and wrong["false_positives"] == 1
    assert bench.score([record], [[]])["leak_rate"] == 1.0
