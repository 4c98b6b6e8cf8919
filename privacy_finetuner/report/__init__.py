"""The privacy report of a run: JSON, standalone HTML with SVG plots, and the model card."""

from privacy_finetuner.report.documents import (
    REPORT_FILE,
    REPORT_SCHEMA_VERSION,
    render_html,
    render_model_card,
    write_documents,
)

__all__ = [
    "REPORT_FILE",
    "REPORT_SCHEMA_VERSION",
    "render_html",
    "render_model_card",
    "write_documents",
]
