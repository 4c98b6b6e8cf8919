"""Rebuild the external evaluation sets in this folder from upstream checkouts (not run in CI).

Usage::

    python benchmarks/guard_eval/extract.py PRESIDIO_RESEARCH_CHECKOUT PRESIDIO_CHECKOUT

* ``presidio_research_synth_v2.jsonl``: ``data/synth_dataset_v2.json`` of microsoft/presidio-research
  (1,500 templated sentences labelled by that project), one ``{"text", "spans"}`` per line;
* ``presidio_recognizer_cases.jsonl``: the literal ``pytest.mark.parametrize`` cases of
  microsoft/presidio's ``presidio-analyzer/tests/test_<type>_recognizer.py`` for the recognizers in
  the guard's scope; a case with ``expected_len == 0`` is a negative (nothing may be flagged).

Both projects are MIT-licensed (see ``LICENSE-presidio.txt``). Nothing here was written by this
project, and no detector threshold is tuned on these files.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

#: Presidio test file stem -> the guard's entity type for its positives.
RECOGNIZERS = {
    "credit_card": "CREDIT_CARD",
    "email": "EMAIL",
    "iban": "IBAN",
    "ip": "IP_ADDRESS",
    "phone": "PHONE",
    "us_ssn": "US_SSN",
    "uk_nino": "UK_NINO",
    "uk_nhs": "NATIONAL_ID",
    "es_nie": "NATIONAL_ID",
    "es_nif": "NATIONAL_ID",
    "fi_personal_identity_code": "NATIONAL_ID",
    "it_fiscal_code": "NATIONAL_ID",
    "pl_pesel": "NATIONAL_ID",
    "se_personnummer": "NATIONAL_ID",
    "de_tax_id": "NATIONAL_ID",
}
_POSITIONS = ("expected_positions", "expected_res")


def _cases(source: str) -> list[tuple[str, int, list[tuple[int, int]]]]:
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or getattr(node.func, "attr", "") != "parametrize":
            continue
        if len(node.args) < 2 or not isinstance(node.args[0], ast.Constant):
            continue
        names = [n.strip() for n in str(node.args[0].value).split(",")]
        if "expected_len" not in names:
            continue
        pos_name = next((n for n in _POSITIONS if n in names), None)
        try:
            rows = ast.literal_eval(node.args[1])
        except ValueError:
            continue
        for row in rows:
            values = dict(zip(names, row, strict=False))
            text = values[names[0]]
            if not isinstance(text, str):
                continue
            positions = [tuple(p) for p in values.get(pos_name, ()) or ()] if pos_name else []
            out.append((text, int(values["expected_len"]), positions))
    return out


def recognizer_cases(presidio: Path) -> list[dict[str, Any]]:
    """Deduplicated cases (a text listed twice keeps the entry with most positions)."""
    records: dict[str, dict[str, Any]] = {}
    for stem, entity in RECOGNIZERS.items():
        path = presidio / "presidio-analyzer" / "tests" / f"test_{stem}_recognizer.py"
        for text, expected, positions in _cases(path.read_text(encoding="utf-8")):
            if expected and len(positions) != expected:
                continue
            spans = [{"start": s, "end": e, "type": entity} for s, e in positions]
            old = records.get(text)
            if old is None or len(spans) > len(old["spans"]):
                records[text] = {"recognizer": stem, "text": text, "spans": spans}
    return list(records.values())


def research_synth(research: Path) -> list[dict[str, Any]]:
    data = json.loads((research / "data" / "synth_dataset_v2.json").read_text(encoding="utf-8"))
    return [
        {
            "text": item["full_text"],
            "template_id": item.get("template_id"),
            "spans": [
                {"start": s["start_position"], "end": s["end_position"], "type": s["entity_type"]}
                for s in item["spans"]
            ],
        }
        for item in data
    ]


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str]) -> int:
    research, presidio = Path(argv[0]), Path(argv[1])
    _write(HERE / "presidio_research_synth_v2.jsonl", research_synth(research))
    _write(HERE / "presidio_recognizer_cases.jsonl", recognizer_cases(presidio))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
