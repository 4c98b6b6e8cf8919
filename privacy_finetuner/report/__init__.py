"""A run's documents: the released report (JSON, model card, publishable HTML) that holds only
what ε covers, and the internal diagnostics that hold the exact statistics of the private data."""

from privacy_finetuner.report.documents import (
    INTERNAL_HEADING,
    REPORT_FILE,
    render_html,
    render_model_card,
    write_documents,
)
from privacy_finetuner.report.release import write_release
from privacy_finetuner.report.schema import (
    INTERNAL_FILE,
    REPORT_SCHEMA_VERSION,
    UnpublishableReportError,
    check_publishable,
)

__all__ = [
    "INTERNAL_FILE",
    "INTERNAL_HEADING",
    "REPORT_FILE",
    "REPORT_SCHEMA_VERSION",
    "UnpublishableReportError",
    "check_publishable",
    "render_html",
    "render_model_card",
    "write_documents",
    "write_release",
]
