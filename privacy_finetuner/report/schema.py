"""Which report fields may be released, and a check that a report holds nothing else.

A run writes two kinds of document. The *released* ones (``privacy_report.json``,
``MODEL_CARD.md``, the publishable part of ``report.html``, and the bundle of
``privacy-finetuner report release``) may only hold what the reported ε covers: the DP statement,
public hyper-parameters, counts that are public under the stated neighbouring relation (N, the
number of privacy units, is public under zero-out) and quality figures on data declared public.
Everything computed exactly from the private data (training losses, metrics on private held-out
users, PII counts, token and truncation counts, invalid-record entries, timings) goes to
``internal_diagnostics.json`` instead.

The allow-list below is the contract: :func:`check_publishable` refuses a report with any other
key, so a field added later to the report builder cannot leak by default.
"""

from __future__ import annotations

from typing import Any

from privacy_finetuner.errors import PrivacyFinetunerError

__all__ = [
    "INTERNAL_FILE",
    "PUBLIC_FIELDS",
    "REPORT_SCHEMA_VERSION",
    "UnpublishableReportError",
    "check_publishable",
]

#: Version 2: the released report lost its exact statistics to ``internal_diagnostics.json``.
REPORT_SCHEMA_VERSION = 2

#: The internal diagnostics of a run: exact statistics of the private data, never released.
INTERNAL_FILE = "internal_diagnostics.json"

_ANY = None  # a leaf whose value is public as a whole (a number, a string, a list of public items)

#: Allowed keys of the released report; a nested dict lists its own allowed keys.
PUBLIC_FIELDS: dict[str, Any] = {
    "schema_version": _ANY,
    "kind": _ANY,
    "version": _ANY,
    "status": _ANY,
    "created": _ANY,  # when the documents were written (UTC): a date, not a data statistic
    "privacy": {
        "epsilon": _ANY,
        "delta": _ANY,
        "target_epsilon": _ANY,
        "epsilon_valid": _ANY,
        "epsilon_invalid_reasons": _ANY,
        "accountant": _ANY,
        "privacy_unit": _ANY,
        "neighbouring": _ANY,
        "neighbouring_dp_accounting": _ANY,
        "epsilon_replace_one": _ANY,
        "sampling": _ANY,
        "sample_rate": _ANY,
        "expected_batch_size": _ANY,
        "noise_multiplier": _ANY,
        "max_grad_norm": _ANY,
        "steps": _ANY,
        "planned_steps": _ANY,
        "num_units": _ANY,
        "max_examples_per_user": _ANY,
        "secure_mode": _ANY,
        "history": _ANY,
    },
    "data": {
        "source_kind": _ANY,
        "max_length": _ANY,
        "skip_invalid": _ANY,
        "missing_user_id": _ANY,
        "validation": _ANY,
    },
    "guard": {
        "enabled": _ANY,
        "applied": _ANY,
        "strategy": _ANY,
        "sensitivity": _ANY,
        "note": _ANY,
        "entity_types": _ANY,  # the detectors the guard ran (configuration, not data)
    },
    "model": {
        "base": _ANY,
        "method": _ANY,
        "trainable_parameters": _ANY,
        "total_parameters": _ANY,
    },
    "training": _ANY,  # the configured hyper-parameters (public inputs, not data statistics)
    "metrics": {"epsilon": _ANY, "final": _ANY, "final_data": _ANY, "dp_validation": _ANY},
    "environment": _ANY,
    "warnings": _ANY,
    "internal_diagnostics": _ANY,
}


class UnpublishableReportError(PrivacyFinetunerError):
    """A report meant for release holds a field the reported ε does not cover."""


def _unknown(report: dict[str, Any], allowed: dict[str, Any], prefix: str) -> list[str]:
    bad: list[str] = []
    for key, value in report.items():
        path = f"{prefix}{key}"
        if key not in allowed:
            bad.append(path)
        elif isinstance(allowed[key], dict):
            if not isinstance(value, dict):
                bad.append(path)
            else:
                bad += _unknown(value, allowed[key], f"{path}.")
    return bad


def check_publishable(report: dict[str, Any]) -> None:
    """Refuse a released report that holds anything outside :data:`PUBLIC_FIELDS`.

    Raises:
        UnpublishableReportError: names the offending fields (names only, never values).
    """
    bad = _unknown(report, PUBLIC_FIELDS, "")
    if bad:
        raise UnpublishableReportError(
            "the report holds fields that the reported ε does not cover and cannot be released: "
            + ", ".join(sorted(bad))
            + f" (exact statistics belong in {INTERNAL_FILE})"
        )
