"""The compliance pack: what a run did, mapped to GDPR, HIPAA and the EU AI Act.

Every line is a statement of fact read from the run directory (``privacy_report.json``,
``audit.json``, ``config.yaml``, ``status.json``, exported ledger entries) with the file it came
from. Where a piece of evidence is missing the pack says so instead of guessing. It is not legal
advice: whether the facts meet an obligation is for the controller's DPO, counsel or expert.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

import yaml

from privacy_finetuner.errors import NotFoundError

__all__ = [
    "COMPLIANCE_HTML",
    "COMPLIANCE_MD",
    "GUARD_ENTITIES",
    "SAFE_HARBOR",
    "ComplianceReport",
    "Evidence",
    "Finding",
    "build_compliance",
    "write_compliance",
]

COMPLIANCE_MD = "COMPLIANCE.md"
COMPLIANCE_HTML = "compliance.html"
_LEDGER_FILES = ("ledger_entries.json", "ledger.json")

#: Entity types the context guard detects (its ``ENTITY_TYPES``; fallback if not installed).
GUARD_ENTITIES: tuple[str, ...] = (
    "PERSON", "EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "UK_NINO", "NATIONAL_ID",
    "IP_ADDRESS", "STREET_ADDRESS", "DATE_OF_BIRTH", "URL_CREDENTIAL", "SECRET",
    "MEDICAL_RECORD_NUMBER",
)  # fmt: skip

#: HIPAA Safe Harbor identifiers, 45 CFR 164.514(b)(2)(i)(A)-(R): (letter, identifier, guard
#: entities that detect it, coverage, remark).
SAFE_HARBOR: tuple[tuple[str, str, tuple[str, ...], str, str], ...] = (
    ("A", "Names", ("PERSON",), "covered", ""),
    ("B", "Geographic subdivisions smaller than a state (street, city, ZIP)", ("STREET_ADDRESS",),
     "partial", "street addresses; a city or ZIP code on its own is not detected"),
    ("C", "Dates (except year) related to an individual; ages over 89", ("DATE_OF_BIRTH",),
     "partial", "dates of birth; admission, discharge and death dates and ages are not"),
    ("D", "Telephone numbers", ("PHONE",), "covered", ""),
    ("E", "Fax numbers", ("PHONE",), "partial", "detected as phone numbers"),
    ("F", "Email addresses", ("EMAIL",), "covered", ""),
    ("G", "Social security numbers", ("US_SSN",), "covered", ""),
    ("H", "Medical record numbers", ("MEDICAL_RECORD_NUMBER",), "covered", ""),
    ("I", "Health plan beneficiary numbers", (), "not covered", ""),
    ("J", "Account numbers", ("IBAN", "CREDIT_CARD"), "partial",
     "IBANs and card numbers; other account numbers are not"),
    ("K", "Certificate/license numbers", ("NATIONAL_ID",), "partial",
     "national identity numbers only"),
    ("L", "Vehicle identifiers and serial numbers, including license plates", (), "not covered",
     ""),
    ("M", "Device identifiers and serial numbers", (), "not covered", ""),
    ("N", "Web URLs", ("URL_CREDENTIAL",), "partial", "URLs that carry credentials"),
    ("O", "IP addresses", ("IP_ADDRESS",), "covered", ""),
    ("P", "Biometric identifiers (finger and voice prints)", (), "not applicable",
     "the pipeline handles text only"),
    ("Q", "Full-face photographs and comparable images", (), "not applicable",
     "the pipeline handles text only"),
    ("R", "Any other unique identifying number, characteristic or code",
     ("SECRET", "UK_NINO", "NATIONAL_ID"), "partial",
     "secrets/API keys and national numbers; arbitrary codes are not"),
)  # fmt: skip


@dataclass
class Evidence:
    """The run directory's files, parsed; None where absent."""

    run_dir: Path
    report: dict[str, Any] | None = None
    audit: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    ledger: list[dict[str, Any]] | None = None
    ledger_file: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        """Names of the evidence files that are absent."""
        names = {
            "privacy_report.json": self.report,
            "audit.json": self.audit,
            "config.yaml": self.config,
            "status.json": self.status,
            "ledger entries (ledger_entries.json)": self.ledger,
        }
        return [k for k, v in names.items() if v is None]


@dataclass(frozen=True)
class Finding:
    """One requirement: what the run did about it, and where that is recorded."""

    requirement: str
    status: str  # "evidence", "partial", "absent", "not applicable"
    statement: str
    source: str


@dataclass
class ComplianceReport:
    """Findings grouped by framework."""

    run_dir: str
    generated: str
    missing: list[str]
    sections: dict[str, list[Finding]]
    safe_harbor: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        """``COMPLIANCE.md``."""
        lines = [
            "# Compliance evidence pack",
            "",
            f"Run directory: `{self.run_dir}`  ",
            f"Generated: {self.generated}",
            "",
            f"> {_DISCLAIMER}",
            "",
        ]
        if self.missing:
            lines += ["**Evidence absent from the run directory:** " + ", ".join(self.missing), ""]
        lines += [f"- {p}" for p in self.problems] + ([""] if self.problems else [])
        for title, findings in self.sections.items():
            lines += [
                f"## {title}",
                "",
                "| Requirement | Status | Facts | Source |",
                "|---|---|---|---|",
            ]
            for f in findings:
                lines.append(
                    f"| {_md(f.requirement)} | {f.status} | {_md(f.statement)} | {_md(f.source)} |"
                )
            lines.append("")
            if title.startswith("HIPAA"):
                lines += [
                    "### Safe Harbor identifiers against the guard's coverage",
                    "",
                    "| § | Identifier | Guard entities | Coverage | Replaced in this run |",
                    "|---|---|---|---|---|",
                ]
                for row in self.safe_harbor:
                    lines.append(
                        f"| ({row['letter']}) | {_md(row['identifier'])} | "
                        f"{', '.join(row['entities']) or '—'} | {row['coverage']}"
                        f"{' — ' + _md(row['remark']) if row['remark'] else ''} | "
                        f"{row['replaced'] if row['replaced'] is not None else '—'} |"
                    )
                lines.append("")
        return "\n".join(lines)

    def to_html(self) -> str:
        """``compliance.html`` (standalone, no scripts)."""
        parts = [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<title>Compliance evidence pack</title><style>body{font-family:system-ui,sans-serif;"
            "max-width:1100px;margin:2em auto}table{border-collapse:collapse;margin-bottom:1em}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
            ".absent{background:#f8d7da}.partial{background:#fff3cd}.evidence{background:#d1e7dd}"
            "</style></head><body><h1>Compliance evidence pack</h1>",
            f"<p>Run directory: <code>{escape(self.run_dir)}</code><br>Generated: "
            f"{escape(self.generated)}</p><p><em>{escape(_DISCLAIMER)}</em></p>",
        ]
        if self.missing:
            parts.append(
                "<p class='absent'>Evidence absent from the run directory: "
                f"{escape(', '.join(self.missing))}</p>"
            )
        parts += [f"<p class='partial'>{escape(p)}</p>" for p in self.problems]
        for title, findings in self.sections.items():
            parts.append(
                f"<h2>{escape(title)}</h2><table><tr><th>Requirement</th><th>Status</th>"
                "<th>Facts</th><th>Source</th></tr>"
            )
            for f in findings:
                cls = f.status.split()[0]
                parts.append(
                    f"<tr><td>{escape(f.requirement)}</td><td class='{escape(cls)}'>"
                    f"{escape(f.status)}</td><td>{escape(f.statement)}</td>"
                    f"<td>{escape(f.source)}</td></tr>"
                )
            parts.append("</table>")
            if title.startswith("HIPAA"):
                parts.append(
                    "<h3>Safe Harbor identifiers against the guard's coverage</h3><table><tr>"
                    "<th>§</th><th>Identifier</th><th>Guard entities</th><th>Coverage</th>"
                    "<th>Replaced in this run</th></tr>"
                )
                for row in self.safe_harbor:
                    cov = row["coverage"] + (f" — {row['remark']}" if row["remark"] else "")
                    replaced = "—" if row["replaced"] is None else str(row["replaced"])
                    parts.append(
                        f"<tr><td>({row['letter']})</td><td>{escape(row['identifier'])}</td>"
                        f"<td>{escape(', '.join(row['entities']) or '—')}</td>"
                        f"<td>{escape(cov)}</td><td>{escape(replaced)}</td></tr>"
                    )
                parts.append("</table>")
        parts.append("</body></html>\n")
        return "".join(parts)


_DISCLAIMER = (
    "Statements of fact about this training run, generated from the files in its run directory. "
    "This is not legal advice and not a certification: whether these facts satisfy an "
    "obligation is for the controller's data protection officer, counsel or expert to decide."
)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _json_file(path: Path, problems: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        problems.append(f"{path.name} could not be read ({exc}); treated as absent")
        return None


def collect_evidence(run_dir: str | Path) -> Evidence:
    """Read whatever evidence the run directory holds.

    Raises:
        NotFoundError: the directory does not exist.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise NotFoundError(f"run directory {run} does not exist")
    ev = Evidence(run)
    report = _json_file(run / "privacy_report.json", ev.problems)
    ev.report = report if isinstance(report, dict) else None
    audit = _json_file(run / "audit.json", ev.problems)
    ev.audit = audit if isinstance(audit, dict) else None
    status = _json_file(run / "status.json", ev.problems)
    ev.status = status if isinstance(status, dict) else None
    cfg = run / "config.yaml"
    if cfg.is_file():
        try:
            loaded = yaml.safe_load(cfg.read_text(encoding="utf-8"))
            ev.config = loaded if isinstance(loaded, dict) else None
        except yaml.YAMLError as exc:
            ev.problems.append(f"config.yaml could not be parsed ({exc}); treated as absent")
    for name in _LEDGER_FILES:
        raw = _json_file(run / name, ev.problems)
        if isinstance(raw, dict):
            raw = raw.get("entries")
        if isinstance(raw, list):
            ev.ledger = [e for e in raw if isinstance(e, dict)]
            ev.ledger_file = name
            break
    return ev


def _g(data: dict[str, Any] | None, *path: str) -> Any:
    cur: Any = data
    for key in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    return cur


def _pct(x: Any) -> str:
    return f"{x:.0%}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "unknown"


def _num(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "unknown"


class _Facts:
    """Short statements derived from the evidence, reused across frameworks."""

    def __init__(self, ev: Evidence) -> None:
        self.ev = ev
        r = ev.report
        self.has_report = r is not None
        p = _g(r, "privacy") or {}
        self.dp = (
            f"DP-SGD with Poisson sampling: (ε = {_num(p.get('epsilon'))}, δ = "
            f"{_num(p.get('delta'))}) per {p.get('privacy_unit', 'unknown')}, accountant "
            f"{p.get('accountant', 'unknown')}, noise multiplier σ = "
            f"{_num(p.get('noise_multiplier'))}, clip norm C = {_num(p.get('max_grad_norm'))}, "
            f"sample rate q = {_num(p.get('sample_rate'))}, {p.get('steps', '?')} steps"
            if r is not None
            else ""
        )
        self.epsilon_valid = p.get("epsilon_valid", True) is not False
        self.secure_mode = p.get("secure_mode")
        g = _g(r, "guard") or {}
        self.guard_enabled = bool(g.get("enabled"))
        self.guard_applied = bool(g.get("applied"))
        self.guard_counts: dict[str, int] = {
            str(k): int(v) for k, v in (g.get("counts") or {}).items()
        }
        self.guard_strategy = g.get("strategy")
        entities = _g(ev.config, "guard", "entities")
        self.guard_entities = tuple(entities) if isinstance(entities, list) else _entities()
        total = sum(self.guard_counts.values())
        self.guard = (
            f"context guard applied before tokenisation (strategy {self.guard_strategy}, "
            f"sensitivity {g.get('sensitivity')}); {total} identifiers replaced"
            + (
                " (" + ", ".join(f"{k} {v}" for k, v in sorted(self.guard_counts.items())) + ")"
                if total
                else ""
            )
            if self.guard_applied
            else f"context guard not applied ({g.get('note') or 'disabled'})"
        )
        d = _g(r, "data") or {}
        self.data = (
            f"source {d.get('source')}: {d.get('traces')} traces, {d.get('users')} users, "
            f"{d.get('train_examples')} training / {d.get('validation_examples')} validation "
            f"examples, {d.get('invalid_records', 0)} invalid records"
            if r is not None
            else ""
        )
        a = ev.audit
        self.audit = (
            f"one-run audit lower bound ε ≥ {_num(a.get('epsilon_lower'))} at "
            f"{_pct(_g(a, 'one_run', 'confidence'))} confidence (proven ε "
            f"{_num(a.get('claimed_epsilon'))}); median canary exposure "
            f"{_num(_g(a, 'exposure', 'median_bits'))} bits; membership-inference AUC "
            + ", ".join(f"{m.get('attack')} {_num(m.get('auc'))}" for m in a.get("mia", []))
            + ("; VIOLATION: the measured bound exceeds the proven ε" if a.get("violation") else "")
            if a is not None
            else ""
        )
        self.audit_violation = bool(a and a.get("violation"))
        m = _g(r, "metrics", "final") or {}
        self.utility = (
            f"validation loss {_num(m.get('loss'))}, tool-call exact match "
            f"{_num(m.get('tool_call_exact_match'))}"
            if m
            else ""
        )
        self.ledger = (
            f"{len(ev.ledger)} ledger entries exported in {ev.ledger_file}"
            + (
                f" (last hash {str(ev.ledger[-1].get('entry_hash', ''))[:16]}…)"
                if ev.ledger and ev.ledger[-1].get("entry_hash")
                else ""
            )
            if ev.ledger is not None
            else ""
        )


def _entities() -> tuple[str, ...]:
    try:
        from privacy_finetuner.guard._model import ENTITY_TYPES
    except ImportError:
        return GUARD_ENTITIES
    return tuple(ENTITY_TYPES)


def _f(requirement: str, fact: str, source: str, absent: str, partial: bool = False) -> Finding:
    if not fact:
        return Finding(requirement, "absent", absent, "—")
    return Finding(requirement, "partial" if partial else "evidence", fact, source)


_NO_REPORT = "no privacy_report.json: the run did not complete or its report was removed"
_NO_AUDIT = "no audit.json: run `privacy-finetuner audit RUN_DIR` on a run trained with canaries"
_NO_LEDGER = (
    "no ledger entries in the run directory (the service's ledger holds them; export them "
    "as ledger_entries.json)"
)


def _gdpr(f: _Facts) -> list[Finding]:
    ev = f.ev
    logs = [
        n
        for n in ("status.json", "config.yaml", "privacy_report.json")
        if (ev.run_dir / n).is_file()
    ]
    return [
        _f("Art. 5(1)(c) data minimisation", f.guard if f.has_report else "",
           "privacy_report.json › guard", _NO_REPORT, partial=not f.guard_applied),
        _f("Art. 5(1)(f) integrity and confidentiality", f.dp,
           "privacy_report.json › privacy", _NO_REPORT, partial=not f.epsilon_valid),
        _f("Art. 5(2) accountability", "; ".join(x for x in (
            "records: " + ", ".join(logs) if logs else "", f.ledger) if x),
           "run directory", "no records in the run directory", partial=not f.ledger),
        _f("Art. 25 data protection by design and by default", f.dp and (
            f"{f.dp}; {f.guard}"), "privacy_report.json", _NO_REPORT,
           partial=not (f.guard_applied and f.epsilon_valid)),
        _f("Art. 32 security of processing (pseudonymisation, testing of measures)",
           "; ".join(x for x in (
               f"guard strategy {f.guard_strategy}" if f.guard_applied else "",
               f"secure_mode {'on (OS CSPRNG noise)' if f.secure_mode else 'off (seeded noise)'}"
               if f.secure_mode is not None else "",
               f.audit) if x), "privacy_report.json, audit.json",
           "neither report nor audit present", partial=not (f.audit and f.secure_mode)),
        _f("Art. 35 DPIA inputs: description of the processing", f.data,
           "privacy_report.json › data", _NO_REPORT),
        _f("Art. 35 DPIA inputs: risks to data subjects (measured)", f.audit, "audit.json",
           _NO_AUDIT, partial=f.audit_violation),
        _f("Art. 35 DPIA inputs: measures to address the risks", f.dp and f"{f.dp}; {f.guard}",
           "privacy_report.json", _NO_REPORT),
        _f("Art. 89(1) safeguards for research and statistical purposes", f.dp,
           "privacy_report.json › privacy", _NO_REPORT, partial=not f.epsilon_valid),
    ]  # fmt: skip


def _hipaa(f: _Facts) -> list[Finding]:
    covered = sum(1 for row in SAFE_HARBOR if row[3] == "covered")
    partial = sum(1 for row in SAFE_HARBOR if row[3] == "partial")
    coverage = (
        f"of the 18 Safe Harbor identifiers the guard detects {covered} fully and {partial} "
        f"partly (table below); {f.guard}"
    )
    return [
        _f("§164.514(b)(2) Safe Harbor: removal of the 18 identifiers",
           coverage if f.has_report else "", "privacy_report.json › guard; guard entity list",
           _NO_REPORT, partial=True),
        _f("§164.514(b)(1) expert determination input: formal privacy guarantee", f.dp,
           "privacy_report.json › privacy", _NO_REPORT, partial=not f.epsilon_valid),
        _f("§164.514(b)(1) expert determination input: measured re-identification risk",
           f.audit, "audit.json", _NO_AUDIT, partial=f.audit_violation),
        _f("§164.514(b)(1) expert determination input: data description", f.data,
           "privacy_report.json › data", _NO_REPORT),
    ]  # fmt: skip


def _ai_act(f: _Facts) -> list[Finding]:
    ev = f.ev
    records = [n for n in ("config.yaml", "status.json", "privacy_report.json", "audit.json")
               if (ev.run_dir / n).is_file()]  # fmt: skip
    return [
        _f("Art. 10(2) data governance: origin and preparation of the data",
           f.data and f"{f.data}; {f.guard}", "privacy_report.json › data, guard", _NO_REPORT),
        _f("Art. 10(2)(f)-(g) examination for biases", "", "—",
           "not assessed by this pipeline: no bias examination is recorded for this run"),
        _f("Art. 10(5) safeguards for special categories of personal data", f.dp,
           "privacy_report.json › privacy", _NO_REPORT, partial=True),
        _f("Art. 12 record-keeping (automatic logs)", "; ".join(x for x in (
            "files: " + ", ".join(records) if records else "", f.ledger) if x),
           "run directory", "no records in the run directory", partial=not f.ledger),
        _f("Art. 15(1) accuracy (declared metrics)", f.utility,
           "privacy_report.json › metrics.final", "no final metrics recorded"),
        _f("Art. 15(5) cybersecurity: resilience to confidentiality attacks", f.audit,
           "audit.json", _NO_AUDIT, partial=f.audit_violation),
    ]  # fmt: skip


def build_compliance(run_dir: str | Path, *, now: datetime | None = None) -> ComplianceReport:
    """Collect the evidence in ``run_dir`` and map it to the three frameworks.

    Raises:
        NotFoundError: the directory does not exist.
    """
    ev = collect_evidence(run_dir)
    facts = _Facts(ev)
    replaced = facts.guard_counts if facts.guard_applied else None
    safe_harbor = [
        {
            "letter": letter,
            "identifier": name,
            "entities": [e for e in entities if e in facts.guard_entities],
            "coverage": cov if not entities or any(e in facts.guard_entities for e in entities)
            else "not covered (entity disabled in config)",
            "remark": remark,
            "replaced": sum(replaced.get(e, 0) for e in entities) if replaced is not None
            and entities else None,
        }
        for letter, name, entities, cov, remark in SAFE_HARBOR
    ]  # fmt: skip
    problems = list(ev.problems)
    if facts.audit_violation:
        problems.append(
            "audit.json reports a measured ε lower bound above the proven ε: the stated DP "
            "guarantee is contradicted by measurement for this run"
        )
    if facts.has_report and not facts.epsilon_valid:
        problems.append("privacy_report.json marks the ε of this run as not valid")
    stamp = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    return ComplianceReport(
        run_dir=str(ev.run_dir),
        generated=stamp,
        missing=ev.missing,
        sections={
            "GDPR (Regulation (EU) 2016/679)": _gdpr(facts),
            "HIPAA Privacy Rule (45 CFR 164.514 de-identification)": _hipaa(facts),
            "EU AI Act (Regulation (EU) 2024/1689)": _ai_act(facts),
        },
        safe_harbor=safe_harbor,
        problems=problems,
    )


def write_compliance(run_dir: str | Path, out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``COMPLIANCE.md`` and ``compliance.html`` (into ``out_dir``, default the run dir)."""
    report = build_compliance(run_dir)
    out = Path(out_dir) if out_dir is not None else Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, html = out / COMPLIANCE_MD, out / COMPLIANCE_HTML
    md.write_text(report.to_markdown() + "\n", encoding="utf-8")
    html.write_text(report.to_html(), encoding="utf-8")
    return md, html
