"""The compliance pack: what a run did, mapped to GDPR, HIPAA and the EU AI Act.

Every line is a statement of fact read from the run directory (``privacy_report.json``,
``audit.json``, ``config.yaml``, ``status.json``, the ledger's exported entries) with the file it
came from. Where a piece of evidence is missing the pack says so instead of guessing. It is not
legal advice: whether the facts meet an obligation is for the controller's DPO, counsel or expert.

:mod:`.evidence` reads the files, :mod:`.facts` states what they say, :mod:`.frameworks` grades
each requirement, :mod:`.rendering` writes Markdown and HTML, and :mod:`.pack` ties them together.
"""

from privacy_finetuner.audit.compliance.evidence import Evidence, collect_evidence
from privacy_finetuner.audit.compliance.facts import GUARD_ENTITIES
from privacy_finetuner.audit.compliance.frameworks import SAFE_HARBOR, Finding, SafeHarborRow
from privacy_finetuner.audit.compliance.pack import (
    COMPLIANCE_HTML,
    COMPLIANCE_MD,
    ComplianceReport,
    build_compliance,
    write_compliance,
)

__all__ = [
    "COMPLIANCE_HTML",
    "COMPLIANCE_MD",
    "GUARD_ENTITIES",
    "SAFE_HARBOR",
    "ComplianceReport",
    "Evidence",
    "Finding",
    "SafeHarborRow",
    "build_compliance",
    "collect_evidence",
    "write_compliance",
]
