"""``COMPLIANCE.md`` and ``compliance.html`` from a :class:`ComplianceReport`.

Both show the same content; the HTML is standalone (inline style, no scripts) so it can be mailed
or archived with the run.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from privacy_finetuner.audit.compliance.frameworks import HIPAA_SECTION, SafeHarborRow

if TYPE_CHECKING:
    from privacy_finetuner.audit.compliance.pack import ComplianceReport

__all__ = ["DISCLAIMER", "render_html", "render_markdown"]

DISCLAIMER = (
    "Statements of fact about this training run, generated from the files in its run directory. "
    "This is not legal advice and not a certification: whether these facts satisfy an "
    "obligation is for the controller's data protection officer, counsel or expert to decide."
)
SAFE_HARBOR_TITLE = "Safe Harbor identifiers against the guard's coverage"
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto}"
    "table{border-collapse:collapse;margin-bottom:1em}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
    ".absent{background:#f8d7da}.partial{background:#fff3cd}.evidence{background:#d1e7dd}"
)


def markdown_cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell (pipes escaped, on one line)."""
    return text.replace("|", "\\|").replace("\n", " ")


def _coverage(row: SafeHarborRow) -> str:
    return row.coverage + (f" — {row.remark}" if row.remark else "")


def _replaced(row: SafeHarborRow) -> str:
    return "—" if row.replaced is None else str(row.replaced)


def _entities(row: SafeHarborRow) -> str:
    return ", ".join(row.entities) or "—"


def _safe_harbor_markdown(rows: list[SafeHarborRow]) -> list[str]:
    lines = [
        f"### {SAFE_HARBOR_TITLE}",
        "",
        "| § | Identifier | Guard entities | Coverage | Replaced in this run |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        cells = (f"({row.letter})", row.identifier, _entities(row), _coverage(row), _replaced(row))
        lines.append("| " + " | ".join(markdown_cell(c) for c in cells) + " |")
    return [*lines, ""]


def render_markdown(report: ComplianceReport) -> str:
    """``COMPLIANCE.md``."""
    lines = [
        "# Compliance evidence pack",
        "",
        f"Run directory: `{report.run_dir}`  ",
        f"Generated: {report.generated}",
        "",
        f"> {DISCLAIMER}",
        "",
    ]
    if report.missing:
        lines += ["**Evidence absent from the run directory:** " + ", ".join(report.missing), ""]
    if report.problems:
        lines += [f"- {problem}" for problem in report.problems] + [""]
    for title, findings in report.sections.items():
        lines += [
            f"## {title}",
            "",
            "| Requirement | Status | Facts | Source |",
            "|---|---|---|---|",
        ]
        for f in findings:
            cells = (f.requirement, f.status, f.statement, f.source)
            lines.append("| " + " | ".join(markdown_cell(c) for c in cells) + " |")
        lines.append("")
        if title == HIPAA_SECTION:
            lines += _safe_harbor_markdown(report.safe_harbor)
    return "\n".join(lines)


def _html_row(cells: tuple[str, ...], *, status_column: int | None = None) -> str:
    tds = []
    for i, cell in enumerate(cells):
        css = f" class='{escape(cell.split()[0])}'" if i == status_column and cell else ""
        tds.append(f"<td{css}>{escape(cell)}</td>")
    return "<tr>" + "".join(tds) + "</tr>"


def _html_table(headers: tuple[str, ...], rows: list[str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f"<table><tr>{head}</tr>" + "".join(rows) + "</table>"


def render_html(report: ComplianceReport) -> str:
    """``compliance.html`` (standalone, no scripts)."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Compliance evidence pack</title><style>{_STYLE}</style></head><body>"
        "<h1>Compliance evidence pack</h1>",
        f"<p>Run directory: <code>{escape(report.run_dir)}</code><br>Generated: "
        f"{escape(report.generated)}</p><p><em>{escape(DISCLAIMER)}</em></p>",
    ]
    if report.missing:
        parts.append(
            "<p class='absent'>Evidence absent from the run directory: "
            f"{escape(', '.join(report.missing))}</p>"
        )
    parts += [f"<p class='partial'>{escape(problem)}</p>" for problem in report.problems]
    for title, findings in report.sections.items():
        rows = [
            _html_row((f.requirement, f.status, f.statement, f.source), status_column=1)
            for f in findings
        ]
        parts.append(f"<h2>{escape(title)}</h2>")
        parts.append(_html_table(("Requirement", "Status", "Facts", "Source"), rows))
        if title == HIPAA_SECTION:
            harbor = [
                _html_row((f"({r.letter})", r.identifier, _entities(r), _coverage(r), _replaced(r)))
                for r in report.safe_harbor
            ]
            headers = ("§", "Identifier", "Guard entities", "Coverage", "Replaced in this run")
            parts.append(f"<h3>{escape(SAFE_HARBOR_TITLE)}</h3>")
            parts.append(_html_table(headers, harbor))
    parts.append("</body></html>\n")
    return "".join(parts)
