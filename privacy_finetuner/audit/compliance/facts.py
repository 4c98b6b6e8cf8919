"""Short statements of fact derived from the evidence, shared by the three frameworks.

A statement is the empty string when its evidence is absent; the framework tables turn that into an
"absent" finding with the reason, so no statement is ever guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from privacy_finetuner.audit.compliance.evidence import LEDGER_HASH_KEY, Evidence, lookup

__all__ = ["GUARD_ENTITIES", "RunFacts", "derive_facts", "format_number", "format_percent"]

#: Entity types the context guard detects; used when the guard extra is not installed.
GUARD_ENTITIES: tuple[str, ...] = (
    "PERSON", "EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "UK_NINO", "NATIONAL_ID",
    "IP_ADDRESS", "STREET_ADDRESS", "DATE_OF_BIRTH", "URL_CREDENTIAL", "SECRET",
    "MEDICAL_RECORD_NUMBER",
)  # fmt: skip


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_number(value: object) -> str:
    """Four significant digits, or "unknown" for a missing or non-numeric value."""
    return f"{value:.4g}" if _is_number(value) else "unknown"


def format_percent(value: object) -> str:
    """A fraction as a whole percentage, or "unknown"."""
    return f"{value:.0%}" if _is_number(value) else "unknown"


def _section(data: dict[str, Any] | None, *path: str) -> dict[str, Any]:
    found = lookup(data, *path)
    return found if isinstance(found, dict) else {}


@dataclass(frozen=True)
class RunFacts:
    """What the evidence says, as statements and the flags the frameworks grade by."""

    evidence: Evidence
    has_report: bool
    dp: str
    epsilon_valid: bool
    secure_mode: bool | None
    guard: str
    guard_applied: bool
    guard_strategy: str | None
    guard_counts: dict[str, int] | None  # None: not released
    guard_entities: tuple[str, ...]
    data: str
    audit: str
    audit_violation: bool
    utility: str
    ledger: str


def describe_dp(report: dict[str, Any] | None) -> str:
    """The DP-SGD guarantee and the parameters it was computed from."""
    if report is None:
        return ""
    p = _section(report, "privacy")
    neighbouring = p.get("neighbouring")
    relation = f" ({str(neighbouring).replace('_', '-')} neighbours)" if neighbouring else ""
    return (
        f"DP-SGD with Poisson sampling: (ε = {format_number(p.get('epsilon'))}, "
        f"δ = {format_number(p.get('delta'))}) per {p.get('privacy_unit', 'unknown')}{relation}, "
        f"accountant {p.get('accountant', 'unknown')}, "
        f"noise multiplier σ = {format_number(p.get('noise_multiplier'))}, "
        f"clip norm C = {format_number(p.get('max_grad_norm'))}, "
        f"sample rate q = {format_number(p.get('sample_rate'))}, {p.get('steps', '?')} steps"
    )


def guard_counts(report: dict[str, Any] | None) -> dict[str, int] | None:
    """Identifiers the guard replaced, by entity type; None when the report does not release
    them (per-type counts of the private data are internal diagnostics)."""
    counts = lookup(report, "guard", "counts")
    if not isinstance(counts, dict):
        return None
    return {str(k): int(v) for k, v in counts.items() if _is_number(v)}


def describe_guard(report: dict[str, Any] | None) -> str:
    """Whether the guard ran before tokenisation, and how many identifiers it replaced."""
    g = _section(report, "guard")
    if not g.get("applied"):
        return f"context guard not applied ({g.get('note') or 'disabled'})"
    applied = (
        f"context guard applied before tokenisation (strategy {g.get('strategy')}, "
        f"sensitivity {g.get('sensitivity')})"
    )
    counts = guard_counts(report)
    if counts is None:
        return f"{applied}; per-type counts are internal diagnostics, not released"
    total = sum(counts.values())
    by_type = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    return f"{applied}; {total} identifiers replaced" + (f" ({by_type})" if total else "")


#: Facts about the training data a report may release, in the order they are stated.
_DATA_FACTS: tuple[tuple[str, str], ...] = (
    ("source", "source {}"),
    ("source_kind", "read from a {}"),
    ("traces", "{} traces"),
    ("users", "{} users"),
    ("train_examples", "{} training examples"),
    ("validation_examples", "{} validation examples"),
    ("invalid_records", "{} invalid records"),
    ("max_length", "truncated to {} tokens"),
    ("validation", "validation set {}"),
)


def describe_data(report: dict[str, Any] | None) -> str:
    """The training data, from whichever of its facts the report releases."""
    if report is None:
        return ""
    d = _section(report, "data")
    stated = [text.format(d[key]) for key, text in _DATA_FACTS if d.get(key) is not None]
    return "training data: " + ", ".join(stated) if stated else "training data: not described"


def describe_audit(audit: dict[str, Any] | None) -> str:
    """The measured privacy: one-run ε lower bound, canary exposure, membership inference."""
    if audit is None:
        return ""
    attacks = audit.get("mia")
    mia = ", ".join(
        f"{m.get('attack')} {format_number(m.get('auc'))}"
        for m in (attacks if isinstance(attacks, list) else [])
        if isinstance(m, dict)
    )
    group = audit.get("group_size")
    claimed = f"claimed ε {format_number(audit.get('claimed_epsilon'))}" + (
        f" for a group of {group} examples" if _is_number(group) and group != 1 else ""
    )
    violation = (
        "; VIOLATION: the measured bound exceeds the claimed ε" if audit.get("violation") else ""
    )
    return (
        f"one-run audit lower bound ε ≥ {format_number(audit.get('epsilon_lower'))} at "
        f"{format_percent(lookup(audit, 'one_run', 'confidence'))} confidence ({claimed}); "
        f"median canary exposure {format_number(lookup(audit, 'exposure', 'median_bits'))} bits; "
        f"membership-inference AUC {mia or 'not measured'}{violation}"
    )


def describe_utility(report: dict[str, Any] | None) -> str:
    """The final validation metrics the run declares."""
    final = _section(report, "metrics", "final")
    if not final:
        return ""
    return (
        f"validation loss {format_number(final.get('loss'))}, tool-call exact match "
        f"{format_number(final.get('tool_call_exact_match'))}"
    )


def describe_ledger(entries: list[dict[str, Any]] | None, file_name: str | None) -> str:
    """How many ledger entries were exported, and the chain head they end at."""
    if entries is None:
        return ""
    head = str(entries[-1].get(LEDGER_HASH_KEY) or "") if entries else ""
    return f"{len(entries)} ledger entries exported in {file_name}" + (
        f" (chain head {head[:16]}…)" if head else ""
    )


def installed_guard_entities() -> tuple[str, ...]:
    """The guard's entity types, from the guard itself where its extra is installed."""
    try:
        from privacy_finetuner.guard import ENTITY_TYPES
    except ImportError:
        return GUARD_ENTITIES
    return tuple(ENTITY_TYPES)


def derive_facts(evidence: Evidence) -> RunFacts:
    """All statements for one run directory."""
    report, audit = evidence.report, evidence.audit
    configured = lookup(evidence.config, "guard", "entities")
    return RunFacts(
        evidence=evidence,
        has_report=report is not None,
        dp=describe_dp(report),
        epsilon_valid=lookup(report, "privacy", "epsilon_valid") is not False,
        secure_mode=lookup(report, "privacy", "secure_mode"),
        guard=describe_guard(report),
        guard_applied=bool(lookup(report, "guard", "applied")),
        guard_strategy=lookup(report, "guard", "strategy"),
        guard_counts=guard_counts(report),
        guard_entities=(
            tuple(str(e) for e in configured)
            if isinstance(configured, list)
            else installed_guard_entities()
        ),
        data=describe_data(report),
        audit=describe_audit(audit),
        audit_violation=bool(audit and audit.get("violation")),
        utility=describe_utility(report),
        ledger=describe_ledger(evidence.ledger, evidence.ledger_file),
    )
