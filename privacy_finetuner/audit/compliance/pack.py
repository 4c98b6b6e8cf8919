"""The compliance pack of one run: evidence → facts → findings per framework → two documents."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from privacy_finetuner.audit.compliance.evidence import Evidence, collect_evidence, lookup
from privacy_finetuner.audit.compliance.facts import RunFacts, derive_facts
from privacy_finetuner.audit.compliance.frameworks import (
    FRAMEWORKS,
    Finding,
    SafeHarborRow,
    safe_harbor_rows,
)
from privacy_finetuner.audit.compliance.rendering import render_html, render_markdown
from privacy_finetuner.jobs import RunStatus

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
    run_status: RunStatus | None = None  # status.json's state; None if absent or unknown

    @property
    def run_finished(self) -> bool:
        """The run wrote all its outputs (``completed`` or stopped at the budget)."""
        return self.run_status is not None and self.run_status.finished

    def to_markdown(self) -> str:
        """``COMPLIANCE.md``."""
        return render_markdown(self)

    def to_html(self) -> str:
        """``compliance.html`` (standalone, no scripts)."""
        return render_html(self)


def _run_status(evidence: Evidence) -> tuple[RunStatus | None, list[str]]:
    """status.json's state, and a problem line when it is unknown or the run did not finish."""
    state = lookup(evidence.status, "state")
    if state is None:
        return None, []
    try:
        status = RunStatus(state)
    except ValueError:
        return None, [f"status.json holds an unknown state {str(state)[:40]!r}"]
    if status.finished:
        return status, []
    return status, [
        f"status.json says the run is {status.value}, not finished: its outputs are incomplete "
        "and any report in the directory may describe an earlier attempt"
    ]


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
    status, status_problems = _run_status(evidence)
    return ComplianceReport(
        run_dir=str(evidence.run_dir),
        generated=(now or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        missing=evidence.missing,
        sections={title: grade(facts) for title, grade in FRAMEWORKS.items()},
        safe_harbor=safe_harbor_rows(facts),
        problems=[*evidence.problems, *status_problems, *_contradictions(facts)],
        run_status=status,
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
