"""The compliance pack of one run: evidence → facts → findings per framework → two documents."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from privacy_finetuner.audit.compliance.evidence import collect_evidence
from privacy_finetuner.audit.compliance.facts import RunFacts, derive_facts
from privacy_finetuner.audit.compliance.frameworks import (
    FRAMEWORKS,
    Finding,
    SafeHarborRow,
    safe_harbor_rows,
)
from privacy_finetuner.audit.compliance.rendering import render_html, render_markdown

__all__ = [
    "COMPLIANCE_HTML",
    "COMPLIANCE_MD",
    "ComplianceReport",
    "build_compliance",
    "write_compliance",
]

COMPLIANCE_MD = "COMPLIANCE.md"
COMPLIANCE_HTML = "compliance.html"


@dataclass
class ComplianceReport:
    """Findings grouped by framework."""

    run_dir: str
    generated: str
    missing: list[str]
    sections: dict[str, list[Finding]]
    safe_harbor: list[SafeHarborRow]
    problems: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        """``COMPLIANCE.md``."""
        return render_markdown(self)

    def to_html(self) -> str:
        """``compliance.html`` (standalone, no scripts)."""
        return render_html(self)


def _contradictions(facts: RunFacts) -> list[str]:
    """Evidence that the stated guarantee does not hold, shown above every table."""
    problems = []
    if facts.audit_violation:
        problems.append(
            "audit.json reports a measured ε lower bound above the proven ε: the stated DP "
            "guarantee is contradicted by measurement for this run"
        )
    if facts.has_report and not facts.epsilon_valid:
        problems.append("privacy_report.json marks the ε of this run as not valid")
    return problems


def build_compliance(run_dir: str | Path, *, now: datetime | None = None) -> ComplianceReport:
    """Collect the evidence in ``run_dir`` and map it to the three frameworks.

    Raises:
        NotFoundError: the directory does not exist.
    """
    evidence = collect_evidence(run_dir)
    facts = derive_facts(evidence)
    return ComplianceReport(
        run_dir=str(evidence.run_dir),
        generated=(now or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        missing=evidence.missing,
        sections={title: grade(facts) for title, grade in FRAMEWORKS.items()},
        safe_harbor=safe_harbor_rows(facts),
        problems=[*evidence.problems, *_contradictions(facts)],
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
