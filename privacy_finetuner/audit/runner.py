"""``run_audit(run_dir)``: score a finished run's canaries and write ``audit.json`` and the
"Empirical privacy" HTML fragment; compare the measured lower bound with the proven ε.

A lower bound above the proven ε cannot happen (except with probability 1 - confidence) if the
run is as private as its accountant says; :attr:`AuditResult.violation` flags it and the CLI exits
non-zero.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from privacy_finetuner.audit.exposure import (
    MIN_CANDIDATES,
    extrapolated_exposure,
    fit_skew_normal,
    rank_exposure,
)
from privacy_finetuner.audit.mia import MiaResult, evaluate_attack, zlib_calibrated_scores
from privacy_finetuner.audit.one_run import OneRunBound, one_run_lower_bound
from privacy_finetuner.audit.plots import histogram_svg, roc_svg
from privacy_finetuner.data.audit_canaries import (
    CANARY_FILE,
    CanaryPlan,
    canary_messages,
    draw_candidates,
)
from privacy_finetuner.errors import DataError, InvalidParameterError, NotFoundError

__all__ = [
    "AUDIT_FILE",
    "AUDIT_HTML_FILE",
    "AuditResult",
    "Scorer",
    "analyse_scores",
    "embed_in_report",
    "finish_audit",
    "group_privacy",
    "render_section",
    "run_audit",
    "section_for_run",
    "write_audit",
]

AUDIT_FILE = "audit.json"
AUDIT_HTML_FILE = "audit.html"
REPORT_FILE = "privacy_report.json"

#: ``scorer(completions) -> NLL in nats`` for the assistant replies of a canary plan.
Scorer = Callable[[Sequence[str]], npt.NDArray[np.float64]]


def group_privacy(epsilon: float, delta: float, k: int) -> tuple[float, float]:
    """(ε, δ) of a group of ``k`` privacy units under (ε, δ)-DP: ``(kε, k e^{(k-1)ε} δ)``."""
    if k < 1:
        raise InvalidParameterError(f"group size must be ≥ 1, got {k}")
    if k == 1:
        return epsilon, delta
    return k * epsilon, min(1.0, k * math.exp(min((k - 1) * epsilon, 700.0)) * delta)


@dataclass
class AuditResult:
    """What the audit measured, and how it compares with the proven guarantee.

    Attributes:
        proven_epsilon: ε from ``privacy_report.json`` (None: no report, or ε not valid).
        delta: the run's δ.
        group_size: privacy units per canary (1 with per-user privacy; ``repeats`` otherwise).
        claimed_epsilon, claimed_delta: the guarantee the audit tests (group privacy applied).
        one_run: the one-run lower bound.
        exposure: summary and per-canary exposures of the members.
        mia: membership-inference results (loss, zlib-calibrated).
        violation: the lower bound exceeds the claimed ε.
    """

    proven_epsilon: float | None
    delta: float
    group_size: int
    claimed_epsilon: float | None
    claimed_delta: float
    one_run: OneRunBound
    exposure: dict[str, Any]
    mia: list[MiaResult]
    canaries: int
    repeats: int
    privacy_unit: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def violation(self) -> bool:
        """True when the measured lower bound is above the ε the run claims."""
        return self.claimed_epsilon is not None and (
            self.one_run.epsilon_lower > self.claimed_epsilon + 1e-9
        )

    @property
    def message(self) -> str:
        """One line for the terminal."""
        lower = self.one_run.epsilon_lower
        conf = f"{self.one_run.confidence:.0%}"
        if self.claimed_epsilon is None:
            return f"measured ε lower bound {lower:.3g} ({conf} confidence); no proven ε to check"
        if self.violation:
            return (
                f"measured ε lower bound {lower:.3g} ({conf} confidence) exceeds the proven ε "
                f"{self.claimed_epsilon:.3g}: this run is NOT as private as its report says "
                "(suspect a bug: noise not added, wrong sampling, or wrong accounting)"
            )
        return (
            f"proven ε {self.claimed_epsilon:.3g} ≥ measured lower bound {lower:.3g} "
            f"({conf} confidence): consistent"
        )

    def to_dict(self) -> dict[str, Any]:
        """The content of ``audit.json``."""
        return {
            "schema_version": 1,
            "proven_epsilon": self.proven_epsilon,
            "delta": self.delta,
            "privacy_unit": self.privacy_unit,
            "group_size": self.group_size,
            "claimed_epsilon": self.claimed_epsilon,
            "claimed_delta": self.claimed_delta,
            "epsilon_lower": self.one_run.epsilon_lower,
            "violation": self.violation,
            "message": self.message,
            "one_run": self.one_run.to_dict(),
            "exposure": self.exposure,
            "mia": [r.to_dict() for r in self.mia],
            "canaries": self.canaries,
            "repeats": self.repeats,
            "notes": self.notes,
        }


def analyse_scores(
    *,
    canary_nll: npt.NDArray[np.float64],
    included: npt.NDArray[np.bool_],
    candidate_nll: npt.NDArray[np.float64],
    texts: Sequence[str],
    space_size: float,
    proven_epsilon: float | None,
    delta: float,
    group_size: int = 1,
    confidence: float = 0.95,
    repeats: int = 1,
    privacy_unit: str | None = None,
) -> AuditResult:
    """The audit from scores alone (no model): exposure, one-run bound, MIA, the check.

    Args:
        canary_nll: NLL (nats) of every audit canary's reply.
        included: which canaries were trained on.
        candidate_nll: NLL of replies with random secrets from the same space.
        texts: the canaries' secrets (for the zlib calibration).
        space_size: number of possible secrets.
        proven_epsilon: the accountant's ε (None: nothing to check against).
        delta: the run's δ.
        group_size: privacy units per canary (group privacy is applied to ε and δ).
        confidence: of the one-run bound.
    """
    inc = np.asarray(included, dtype=bool)
    nll = np.asarray(canary_nll, dtype=np.float64)
    if nll.shape != inc.shape or nll.size != len(texts):
        raise InvalidParameterError("canary scores, inclusion flags and texts differ in length")
    claimed: float | None = None
    claimed_delta = delta
    if proven_epsilon is not None and math.isfinite(proven_epsilon):
        claimed, claimed_delta = group_privacy(proven_epsilon, delta, group_size)
    notes: list[str] = []
    if claimed_delta >= 1.0 / (2 * max(1, nll.size)):
        notes.append(
            f"δ for the audited unit ({claimed_delta:.3g}) is large compared with 1/(2m): the "
            "one-run bound is weak; audit with one canary per privacy unit"
        )
    bound = one_run_lower_bound(-nll, inc, delta=min(claimed_delta, 1.0), confidence=confidence)
    fit = fit_skew_normal(candidate_nll)
    members = nll[inc]
    exposure: dict[str, Any] = {
        "members": int(members.size),
        "candidates": int(candidate_nll.size),
        "space_size": space_size,
        "fit": {"shape": fit.shape, "loc": fit.loc, "scale": fit.scale},
    }
    if candidate_nll.size < MIN_CANDIDATES:
        notes.append(f"only {candidate_nll.size} candidates (< {MIN_CANDIDATES}): coarse ranks")
    if members.size:
        ext = extrapolated_exposure(members, candidate_nll, space_size=space_size, fit=fit)
        rank = rank_exposure(members, candidate_nll)
        exposure.update(
            {
                "median_bits": float(np.median(ext)),
                "max_bits": float(np.max(ext)),
                "median_rank_bits": float(np.median(rank)),
                "max_rank_bits": float(np.max(rank)),
                "extrapolated_bits": [round(float(x), 3) for x in ext],
                "rank_bits": [round(float(x), 3) for x in rank],
            }
        )
    mia: list[MiaResult] = []
    if inc.any() and (~inc).any():
        mia.append(evaluate_attack("loss threshold", -nll, inc))
        mia.append(evaluate_attack("zlib-calibrated", zlib_calibrated_scores(nll, texts), inc))
    return AuditResult(
        proven_epsilon=proven_epsilon,
        delta=delta,
        group_size=group_size,
        claimed_epsilon=claimed,
        claimed_delta=claimed_delta,
        one_run=bound,
        exposure=exposure,
        mia=mia,
        canaries=int(nll.size),
        repeats=repeats,
        privacy_unit=privacy_unit,
        notes=notes,
    )


def _read_report(run: Path) -> dict[str, Any] | None:
    path = run / REPORT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None
    return data if isinstance(data, dict) else None


def _model_scorer(run: Path, plan: CanaryPlan, batch_size: int) -> Scorer:
    from privacy_finetuner.audit.scoring import completion_nll
    from privacy_finetuner.modeling.loading import load_trained

    loaded = load_trained(run)
    prefix = canary_messages(plan, "")[:-1]

    def score(replies: Sequence[str]) -> npt.NDArray[np.float64]:
        return completion_nll(
            loaded.model, loaded.tokenizer, prefix, replies, batch_size=batch_size
        )

    return score


def run_audit(
    run_dir: str | Path,
    *,
    candidates: int = MIN_CANDIDATES,
    confidence: float = 0.95,
    batch_size: int = 256,
    scorer: Scorer | None = None,
    write: bool = True,
) -> AuditResult:
    """Audit a finished run: needs ``audit_canaries.json`` and the trained model in ``run_dir``.

    Writes ``audit.json`` and ``audit.html`` (the "Empirical privacy" fragment in a page) unless
    ``write`` is False.

    Raises:
        NotFoundError: no run directory, or no canary plan in it.
        DataError: the plan or the report cannot be read.
        ModelError: the trained model cannot be loaded.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise NotFoundError(f"run directory {run} does not exist")
    plan_path = run / CANARY_FILE
    if not plan_path.is_file():
        raise NotFoundError(
            f"{run} has no {CANARY_FILE}: the run was trained without audit canaries "
            "(train with --audit, or see docs/audit.md)"
        )
    plan = CanaryPlan.load(plan_path)
    report = _read_report(run)
    privacy = (report or {}).get("privacy", {})
    proven = privacy.get("epsilon")
    if privacy.get("epsilon_valid") is False or not isinstance(proven, (int, float)):
        proven = None
    delta = float(privacy.get("delta", 1e-5))
    unit = privacy.get("privacy_unit")
    group = 1 if unit == "user" and plan.privacy_unit_per_canary else plan.repeats
    score = scorer or _model_scorer(run, plan, batch_size)
    secrets = [c.secret for c in plan.canaries]
    replies = [plan.answer.format(secret=s) for s in secrets]
    others = [plan.answer.format(secret=s) for s in draw_candidates(plan, candidates)]
    result = analyse_scores(
        canary_nll=score(replies),
        included=np.array([c.included for c in plan.canaries], dtype=bool),
        candidate_nll=score(others),
        texts=secrets,
        space_size=plan.space_size,
        proven_epsilon=float(proven) if proven is not None else None,
        delta=delta,
        group_size=group,
        confidence=confidence,
        repeats=plan.repeats,
        privacy_unit=unit if isinstance(unit, str) else None,
    )
    if report is None:
        result.notes.append(f"no {REPORT_FILE}: the proven ε is unknown")
    if write:
        write_audit(run, result)
    return result


_SECTION_START = '<section id="empirical-privacy">'


def finish_audit(run_dir: str | Path, plan: CanaryPlan, **kwargs: Any) -> AuditResult:
    """Save the plan into a finished run's directory and audit it (``train --audit``).

    The training job calls this after marking the run finished, so the audit reads the saved model
    and report; the caller decides what to do with ``result.violation``.
    """
    run = Path(run_dir)
    plan.save(run / CANARY_FILE)
    return run_audit(run, **kwargs)


def embed_in_report(run: Path, section: str) -> bool:
    """Put ``section`` into the run's ``report.html`` (before the model card, else before
    ``</body>``), replacing an earlier one. Returns False when there is no report.html."""
    path = run / "report.html"
    if not path.is_file():
        return False
    html = path.read_text(encoding="utf-8")
    start = html.find(_SECTION_START)
    if start >= 0:
        end = html.find("</section>", start)
        html = html[:start] + html[end + len("</section>") :] if end >= 0 else html[:start]
    anchor = html.find("<h2>Model card</h2>")
    if anchor < 0:
        anchor = html.rfind("</body>")
    if anchor < 0:
        anchor = len(html)
    tmp = path.with_name(f".{path.name}.audit.tmp")
    tmp.write_text(html[:anchor] + section + html[anchor:], encoding="utf-8")
    tmp.replace(path)
    return True


def write_audit(run: Path, result: AuditResult) -> None:
    """Write ``audit.json`` and a standalone ``audit.html`` holding the section, and embed the
    section in ``report.html`` when the run has one."""
    (run / AUDIT_FILE).write_text(json.dumps(result.to_dict(), indent=2) + "\n", "utf-8")
    embed_in_report(run, render_section(result.to_dict()))
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<title>Empirical privacy</title><style>body{font-family:system-ui,sans-serif;"
        "max-width:980px;margin:2em auto}td,th{border:1px solid #ccc;padding:4px 10px;"
        "text-align:left}table{border-collapse:collapse}</style></head><body>"
        f"{render_section(result.to_dict())}</body></html>\n"
    )
    (run / AUDIT_HTML_FILE).write_text(page, "utf-8")


def section_for_run(run_dir: str | Path) -> str:
    """The "Empirical privacy" section of a run from its ``audit.json``; "" when not audited
    (for the report writer to embed natively)."""
    path = Path(run_dir) / AUDIT_FILE
    if not path.is_file():
        return ""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return render_section(data)
    except (json.JSONDecodeError, KeyError, TypeError):
        return ""


def _fmt(x: Any, spec: str = ".3g") -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def render_section(audit: dict[str, Any]) -> str:
    """The "Empirical privacy" HTML fragment (a ``<section>``) from ``audit.json``'s content:
    proven ε next to the measured lower bound, exposure histogram and ROC curve (inline SVG)."""
    one = audit["one_run"]
    exp = audit["exposure"]
    rows = [
        ("proven ε (accountant)", _fmt(audit.get("proven_epsilon"))),
        ("δ", _fmt(audit.get("delta"))),
        ("privacy units per canary", _fmt(audit.get("group_size"))),
        ("ε claimed for one canary", _fmt(audit.get("claimed_epsilon"))),
        (
            f"measured ε lower bound ({one['confidence']:.0%} confidence)",
            _fmt(one["epsilon_lower"]),
        ),
        ("audit canaries (trained on)", f"{one['m']} ({one['members']})"),
        ("correct guesses", f"{one['correct']} of {one['guesses']}"),
        (
            "median / max exposure (bits)",
            f"{_fmt(exp.get('median_bits'))} / " f"{_fmt(exp.get('max_bits'))}",
        ),
        ("candidates ranked against", _fmt(exp.get("candidates"))),
    ]
    for m in audit.get("mia", []):
        rows.append(
            (
                f"MIA {m['attack']}: AUC / TPR at 1 % FPR",
                f"{_fmt(m['auc'])} / {_fmt(m['tpr_at_1pct_fpr'])}",
            )
        )
    table = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    verdict_style = "background:#f8d7da" if audit.get("violation") else "background:#d1e7dd"
    hist = histogram_svg(
        exp.get("extrapolated_bits", []),
        title="Exposure of the trained-on canaries",
        x_label="exposure (bits)",
        x_max=math.log2(float(exp.get("space_size", 2.0))),
        marker=("random guess ≈ 1 bit", 1.0),
    )
    roc = roc_svg(
        [(m["attack"], m["roc"]["fpr"], m["roc"]["tpr"]) for m in audit.get("mia", [])],
        title="Membership inference ROC (log-log)",
    )
    notes = "".join(f"<li>{escape(n)}</li>" for n in audit.get("notes", []))
    return (
        '<section id="empirical-privacy"><h2>Empirical privacy</h2>'
        f'<p style="{verdict_style};padding:8px">{escape(audit["message"])}</p>'
        f"<table>{table}</table>{hist}{roc}"
        + (f"<ul>{notes}</ul>" if notes else "")
        + "<p><small>Lower bounds from one training run (Steinke, Nasr and Jagielski 2023) and "
        "canary exposure (Carlini et al. 2019). An audit of the final model typically recovers "
        "only a fraction of the proven ε; it detects bugs, it does not certify privacy.</small>"
        "</p></section>"
    )
