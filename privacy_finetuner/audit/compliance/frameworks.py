"""The requirements of GDPR, HIPAA and the EU AI Act, each graded against the run's facts.

A requirement is "evidence" when the run directory records what was done about it, "partial" when
it records something short of it, and "absent" (with the reason) when it records nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from privacy_finetuner.audit.compliance.facts import RunFacts

__all__ = [
    "FRAMEWORKS",
    "HIPAA_SECTION",
    "SAFE_HARBOR",
    "Finding",
    "SafeHarborRow",
    "ai_act_findings",
    "gdpr_findings",
    "hipaa_findings",
    "safe_harbor_rows",
]

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

NO_REPORT = "no privacy_report.json: the run did not complete or its report was removed"
NO_AUDIT = "no audit.json: run `privacy-finetuner audit RUN_DIR` on a run trained with canaries"
NO_LEDGER = (
    "no ledger entries in the run directory (the service's ledger holds them; export them "
    "as ledger_entries.json)"
)
NO_RECORDS = "no records in the run directory"


@dataclass(frozen=True)
class Finding:
    """One requirement: what the run did about it, and where that is recorded."""

    requirement: str
    status: str  # "evidence", "partial", "absent", "not applicable"
    statement: str
    source: str


@dataclass(frozen=True)
class SafeHarborRow:
    """One Safe Harbor identifier against the guard's coverage in this run."""

    letter: str
    identifier: str
    entities: tuple[str, ...]
    coverage: str
    remark: str
    replaced: int | None  # identifiers of this kind replaced; None: not detected or not released


def finding(
    requirement: str, fact: str, source: str, absent: str, *, partial: bool = False
) -> Finding:
    """Grade one requirement: absent without a fact, else evidence (or partial)."""
    if not fact:
        return Finding(requirement, "absent", absent, "—")
    return Finding(requirement, "partial" if partial else "evidence", fact, source)


def _joined(*statements: str) -> str:
    return "; ".join(s for s in statements if s)


def _dp_and_guard(facts: RunFacts) -> str:
    return f"{facts.dp}; {facts.guard}" if facts.dp else ""


def _records(facts: RunFacts, label: str, *names: str) -> str:
    files = facts.evidence.present_files(*names)
    return _joined(f"{label}: " + ", ".join(files) if files else "", facts.ledger)


def _security_measures(facts: RunFacts) -> str:
    if facts.secure_mode is None:
        secure = ""
    elif facts.secure_mode:
        secure = "secure_mode on (OS CSPRNG noise)"
    else:
        secure = "secure_mode off (seeded noise)"
    strategy = f"guard strategy {facts.guard_strategy}" if facts.guard_applied else ""
    return _joined(strategy, secure, facts.audit)


def gdpr_findings(facts: RunFacts) -> list[Finding]:
    """GDPR: the principles of Art. 5, by design (25), security (32), DPIA (35), research (89)."""
    dp_invalid = not facts.epsilon_valid
    return [
        finding("Art. 5(1)(c) data minimisation", facts.guard if facts.has_report else "",
                "privacy_report.json › guard", NO_REPORT, partial=not facts.guard_applied),
        finding("Art. 5(1)(f) integrity and confidentiality", facts.dp,
                "privacy_report.json › privacy", NO_REPORT, partial=dp_invalid),
        finding("Art. 5(2) accountability",
                _records(facts, "records", "status.json", "config.yaml", "privacy_report.json"),
                "run directory", NO_RECORDS, partial=not facts.ledger),
        finding("Art. 25 data protection by design and by default", _dp_and_guard(facts),
                "privacy_report.json", NO_REPORT,
                partial=not (facts.guard_applied and facts.epsilon_valid)),
        finding("Art. 32 security of processing (pseudonymisation, testing of measures)",
                _security_measures(facts), "privacy_report.json, audit.json",
                "neither report nor audit present",
                partial=not (facts.audit and facts.secure_mode)),
        finding("Art. 35 DPIA inputs: description of the processing", facts.data,
                "privacy_report.json › data", NO_REPORT),
        finding("Art. 35 DPIA inputs: risks to data subjects (measured)", facts.audit,
                "audit.json", NO_AUDIT, partial=facts.audit_violation),
        finding("Art. 35 DPIA inputs: measures to address the risks", _dp_and_guard(facts),
                "privacy_report.json", NO_REPORT),
        finding("Art. 89(1) safeguards for research and statistical purposes", facts.dp,
                "privacy_report.json › privacy", NO_REPORT, partial=dp_invalid),
    ]  # fmt: skip


def hipaa_findings(facts: RunFacts) -> list[Finding]:
    """HIPAA de-identification: Safe Harbor and the inputs to an expert determination."""
    covered = sum(1 for row in SAFE_HARBOR if row[3] == "covered")
    partly = sum(1 for row in SAFE_HARBOR if row[3] == "partial")
    coverage = (
        f"of the 18 Safe Harbor identifiers the guard detects {covered} fully and {partly} "
        f"partly (table below); {facts.guard}"
    )
    return [
        finding("§164.514(b)(2) Safe Harbor: removal of the 18 identifiers",
                coverage if facts.has_report else "",
                "privacy_report.json › guard; guard entity list", NO_REPORT, partial=True),
        finding("§164.514(b)(1) expert determination input: formal privacy guarantee", facts.dp,
                "privacy_report.json › privacy", NO_REPORT, partial=not facts.epsilon_valid),
        finding("§164.514(b)(1) expert determination input: measured re-identification risk",
                facts.audit, "audit.json", NO_AUDIT, partial=facts.audit_violation),
        finding("§164.514(b)(1) expert determination input: data description", facts.data,
                "privacy_report.json › data", NO_REPORT),
    ]  # fmt: skip


def ai_act_findings(facts: RunFacts) -> list[Finding]:
    """EU AI Act: data governance (Art. 10), record-keeping (12), accuracy and security (15)."""
    data_and_guard = f"{facts.data}; {facts.guard}" if facts.data else ""
    records = _records(
        facts, "files", "config.yaml", "status.json", "privacy_report.json", "audit.json"
    )
    return [
        finding("Art. 10(2) data governance: origin and preparation of the data", data_and_guard,
                "privacy_report.json › data, guard", NO_REPORT),
        finding("Art. 10(2)(f)-(g) examination for biases", "", "—",
                "not assessed by this pipeline: no bias examination is recorded for this run"),
        finding("Art. 10(5) safeguards for special categories of personal data", facts.dp,
                "privacy_report.json › privacy", NO_REPORT, partial=True),
        finding("Art. 12 record-keeping (automatic logs)", records,
                "run directory", NO_RECORDS, partial=not facts.ledger),
        finding("Art. 15(1) accuracy (declared metrics)", facts.utility,
                "privacy_report.json › metrics.final",
                "no final metrics released (metrics on private validation data stay internal)"),
        finding("Art. 15(5) cybersecurity: resilience to confidentiality attacks", facts.audit,
                "audit.json", NO_AUDIT, partial=facts.audit_violation),
    ]  # fmt: skip


HIPAA_SECTION = "HIPAA Privacy Rule (45 CFR 164.514 de-identification)"

#: Section title → the function grading its requirements, in the order the pack shows them.
FRAMEWORKS: dict[str, Callable[[RunFacts], list[Finding]]] = {
    "GDPR (Regulation (EU) 2016/679)": gdpr_findings,
    HIPAA_SECTION: hipaa_findings,
    "EU AI Act (Regulation (EU) 2024/1689)": ai_act_findings,
}


def safe_harbor_rows(facts: RunFacts) -> list[SafeHarborRow]:
    """The Safe Harbor table for this run: coverage given the configured entities, counts."""
    enabled = facts.guard_entities
    rows = []
    for letter, identifier, entities, coverage, remark in SAFE_HARBOR:
        detected = tuple(e for e in entities if e in enabled)
        if entities and not detected:
            coverage = "not covered (entity disabled in config)"
        counts = facts.guard_counts if facts.guard_applied else None
        replaced = (
            sum(counts.get(e, 0) for e in entities) if counts is not None and entities else None
        )
        rows.append(SafeHarborRow(letter, identifier, detected, coverage, remark, replaced))
    return rows
