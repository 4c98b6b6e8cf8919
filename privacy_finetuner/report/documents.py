"""The run's documents: released (``privacy_report.json``, ``MODEL_CARD.md``, the publishable
part of ``report.html``) and internal (``internal_diagnostics.json`` and the HTML section headed
as not covered by ε).

The released report is a plain dict (the JSON on disk is the source of truth) checked against
:mod:`privacy_finetuner.report.schema` before anything is written; the model card and the HTML
are rendered from it. The model card's DP statement follows the checklist of Ponomareva et al.
(2023), "How to DP-fy ML", section 5.2: privacy unit, neighbouring relation, (ε, δ), accountant,
sampling, clip norm, noise multiplier, steps, data set size, and what the guarantee does and
does not cover.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from privacy_finetuner.report.coverage import uncovered_categories
from privacy_finetuner.report.schema import INTERNAL_FILE, REPORT_SCHEMA_VERSION, check_publishable
from privacy_finetuner.report.svg import bar_chart, line_chart

__all__ = [
    "INTERNAL_FILE",
    "INTERNAL_HEADING",
    "REPORT_FILE",
    "REPORT_SCHEMA_VERSION",
    "file_sha256",
    "render_html",
    "render_model_card",
    "write_documents",
]

REPORT_FILE = "privacy_report.json"

#: Heading of the HTML section that holds the internal diagnostics.
INTERNAL_HEADING = "Internal diagnostics: NOT covered by ε (do not publish)"

_RELATION_TEXT = {
    "zero_out": (
        "zero-out: one {unit}'s data replaced by a null {unit} that contributes no gradient, "
        "N unchanged and public (dp-accounting REPLACE_SPECIAL; for the Poisson-subsampled "
        "Gaussian the same ε as add/remove-one)"
    ),
    "add_remove": "add/remove one {unit}",
    "replace_one": "replace one {unit}'s data by any other data (N unchanged)",
}


def _num(x: Any, fmt: str = ".4g") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float) and not math.isfinite(x):
        return "∞" if x > 0 else "n/a"
    return format(x, fmt) if isinstance(x, (int, float)) else str(x)


def _valid_text(p: dict[str, Any]) -> str:
    if p.get("epsilon_valid", False):
        return "yes"
    reasons = p.get("epsilon_invalid_reasons") or ["see warnings"]
    return "NO (epsilon_valid: false): " + "; ".join(reasons)


def _relation(p: dict[str, Any]) -> str:
    relation = str(p.get("neighbouring", "zero_out"))
    text = _RELATION_TEXT.get(relation, relation)
    return text.format(unit=p["privacy_unit"])


def _dp_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    p = report["privacy"]
    unit = p["privacy_unit"]
    cap = p.get("max_examples_per_user")
    unit_text = f"{unit}-level" + (f" (at most {cap} examples per user)" if cap else "")
    return [
        ("Privacy unit", unit_text),
        ("Neighbouring relation", _relation(p)),
        ("ε (spent)", _num(p["epsilon"])),
        ("δ", _num(p["delta"])),
        ("Target ε", _num(p.get("target_epsilon"))),
        ("ε valid", _valid_text(p)),
        ("ε under replace-one (PLD)", _num(p.get("epsilon_replace_one"))),
        ("Accountant", f"{p['accountant'].upper()} (Google dp-accounting)"),
        ("Sampling", f"Poisson, rate q = {_num(p['sample_rate'])}"),
        ("Expected batch size", _num(p.get("expected_batch_size"))),
        ("Clip norm C", _num(p["max_grad_norm"])),
        ("Noise multiplier σ", _num(p["noise_multiplier"])),
        ("Steps", _num(p["steps"])),
        (f"Data set size N ({unit}s, public)", _num(p["num_units"])),
        (
            "Secure RNG",
            (
                "yes (noise and sampling from OS entropy)"
                if p.get("secure_mode")
                else "no: seeded, replayable noise and sampling"
            ),
        ),
    ]


def _statement(report: dict[str, Any]) -> list[str]:
    p = report["privacy"]
    unit = p["privacy_unit"]
    valid = bool(p.get("epsilon_valid", False))
    lines: list[str] = []
    if not valid:
        lines += [
            "> **The ε below is NOT a valid guarantee for this run (`epsilon_valid: false`).** "
            + " ".join(f"Reason: {r}." for r in p.get("epsilon_invalid_reasons") or []),
            "",
        ]
    verb = "satisfies" if valid else "would satisfy, had its noise and sampling been secret,"
    lines.append(
        f"This model was trained with DP-SGD and {verb} **({_num(p['epsilon'], '.3g')}, "
        f"{_num(p['delta'], '.1g')})-differential privacy at the {unit} level** under the "
        f"zero-out neighbouring relation: replacing all training data of any one {unit} by a "
        f"null {unit} that contributes no gradient (the number of {unit}s N = {p['num_units']} "
        "is fixed and published) changes the distribution of everything released (the weights "
        "and this card) by at most that (ε, δ). For the Poisson-subsampled Gaussian mechanism "
        "this is the same ε as for adding or removing one "
        f"{unit} (dp-accounting's REPLACE_SPECIAL relation). Under the stronger replace-one "
        f"relation (one {unit}'s data swapped for any other) the same run gives ε = "
        f"{_num(p.get('epsilon_replace_one'), '.3g')}. Each logical step Poisson-sampled "
        f"{unit}s with probability q = {_num(p['sample_rate'])}, clipped each {unit}'s gradient "
        f"(over all trainable parameters) to L2 norm C = {_num(p['max_grad_norm'])}, and added "
        f"Gaussian noise with standard deviation σ·C, σ = {_num(p['noise_multiplier'])}, once "
        f"per step; {p['steps']} steps were taken. ε was computed with the "
        f"{p['accountant'].upper()} accountant of Google's dp-accounting library (composition "
        "of Poisson-subsampled Gaussian mechanisms)."
    )
    return lines


def render_model_card(report: dict[str, Any]) -> str:
    """``MODEL_CARD.md`` with the DP statement, from the released report only."""
    p, d, m, g = report["privacy"], report["data"], report["model"], report["guard"]
    unit = p["privacy_unit"]
    lines = [
        f"# Model card: {m['base']} fine-tuned with DP-SGD ({m['method']})",
        "",
        f"Status: **{report['status']}**. Generated by privacy-finetuner {report['version']}"
        + (f" on {report['created']}." if report.get("created") else "."),
        "",
        "## Differential privacy statement",
        "",
        *_statement(report),
        "",
        "| Parameter | Value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in _dp_rows(report)],
        "",
        "**What the guarantee covers.** The fine-tuning data, at the unit above, and everything "
        "in this card and the released weights. **What it does not cover:** the base model's "
        "own pre-training data; hyper-parameter tuning on the private data, if any was done "
        "outside this run (not accounted); the validation split, which is held out and not "
        "trained on: no exact figure computed on it is published here"
        + (" (only the DP estimate below)." if report["metrics"].get("dp_validation") else "."),
    ]
    if d.get("missing_user_id") == "own_user" and unit == "user":
        lines += [
            "",
            "> Note: traces without a `user_id` were each treated as their own user "
            "(`data.missing_user_id: own_user`); a person whose traces lack a user id is "
            "protected per trace, not as a whole.",
        ]
    if unit == "example":
        lines += [
            "",
            "> Note: example-level DP protects single traces; a person with k traces is "
            "protected only by group privacy (about k·ε). Use privacy_unit: user for "
            "user-level DP.",
        ]
    guard = (
        f"applied ({g['strategy']}, sensitivity {g['sensitivity']})"
        if g["applied"]
        else "not applied"
    ) + (f" — {g['note']}" if g.get("note") else "")
    lines += [
        "",
        "## Data",
        "",
        f"- Source: {d.get('source_kind', 'file')} chat traces; every trace is its own "
        f"sequence (no packing), truncated to {d['max_length']} tokens, so per-unit clipping is "
        "exact.",
        "- The loss covers assistant messages and tool calls only.",
        f"- Context guard: {guard}.",
        "- " + _uncovered_text(report) + ".",
        "- Exact counts of the private data (traces, examples, tokens, truncations, invalid "
        "records, identifiers replaced by the guard) are not published: they are not covered "
        f"by ε. The operator's `{INTERNAL_FILE}` holds them.",
        "",
        "## Model",
        "",
        f"- Base: `{m['base']}`; method: {m['method']}; trainable parameters: "
        f"{m['trainable_parameters']:,} of {m['total_parameters']:,}.",
    ]
    if m["base"] == "tiny":
        lines.append(
            "- Tokenizer: byte-level BPE trained on public synthetic traces, not on the private "
            "data (a vocabulary learnt from private text would be a non-private release)."
        )
    final = report["metrics"].get("final") or {}
    dp_val = report["metrics"].get("dp_validation") or {}
    lines += ["", "## Evaluation", ""]
    if final:
        lines.append(
            f"On {report['metrics'].get('final_data')}: validation loss {_num(final.get('loss'))}"
            f"; perplexity {_num(final.get('perplexity'))}; tool-call exact match "
            f"{_num(final.get('tool_call_exact_match'))} on {final.get('tool_call_prompts', 0)} "
            "prompts."
        )
    if dp_val:
        lines.append(
            f"DP estimate on the private held-out {unit}s: validation loss ≈ "
            f"{_num(dp_val.get('loss'), '.3g')} (perplexity ≈ {_num(dp_val.get('perplexity'), '.3g')}"
            f"), the mean of each held-out {unit}'s loss per target token clipped to "
            f"[0, {_num(dp_val.get('clip'), '.3g')}] plus Gaussian noise (σ = "
            f"{_num(dp_val.get('noise_multiplier'), '.3g')}), itself "
            f"({_num(dp_val.get('epsilon'), '.3g')}, {_num(dp_val.get('delta'), '.1g')})-DP. "
            f"Held-out {unit}s are disjoint from the training {unit}s (parallel composition), so "
            "the run's ε above covers it. It is noisy by design: read it as a rough figure."
        )
    if not final and not dp_val:
        lines.append(
            "No quality figure is published: exact metrics on private held-out users are not "
            "covered by ε. Declare a public validation set (`data.validation_path` with "
            "`data.validation_public: true`) to publish metrics on it."
        )
    if dp_val and not final:
        lines.append("Exact metrics on the private held-out users are internal diagnostics only.")
    if report.get("warnings"):
        lines += ["", "## Warnings", "", *[f"- {w}" for w in report["warnings"]]]
    lines += [
        "",
        "Reference: N. Ponomareva et al., *How to DP-fy ML: A Practical Guide to Machine "
        "Learning with Differential Privacy*, JAIR 77 (2023).",
        "",
    ]
    return "\n".join(lines)


def _uncovered(report: dict[str, Any]) -> list[str] | None:
    """Common PII categories the run's guard had no detector for; None if not recorded."""
    types = report["guard"].get("entity_types")
    return None if types is None else uncovered_categories(types)


def _uncovered_text(report: dict[str, Any]) -> str:
    missing = _uncovered(report)
    if missing is None:
        return "The entity types the guard looked for are not recorded"
    return "Common kinds of personal data the guard has no detector for: " + "; ".join(missing)


# Nothing may widen the page past the viewport: tables and <pre> scroll inside their own box.
_CSS = (
    "*{box-sizing:border-box}"
    "body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;"
    "color:#222;overflow-wrap:anywhere}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}"
    ".scroll{max-width:100%;overflow-x:auto}"
    "pre{max-width:100%;overflow-x:auto;background:#f6f6f6;padding:8px}"
    ".card{border:1px solid #ccc;padding:0 1em;max-width:100%;overflow-x:auto}"
    "svg{max-width:100%;height:auto}"
    ".warn{background:#fff3cd;padding:8px;border:1px solid #e0c36b}"
    ".internal{border:3px solid #c0392b;padding:0 12px;margin-top:3em}"
    "svg{margin:8px 0;display:block}"
)


def _json_pre(value: dict[str, Any]) -> str:
    """A JSON document as readable text (ε, not \\u03b5), in a box that scrolls on its own."""
    return f"<pre>{escape(json.dumps(value, indent=2, ensure_ascii=False, default=str))}</pre>"


def _internal_section(internal: dict[str, Any]) -> str:
    metrics = internal.get("metrics", {})
    loss_chart = line_chart(
        "Loss (exact, on private data)",
        [
            ("train (sampled batches)", [tuple(x) for x in metrics.get("train_loss", [])]),
            (
                "validation (private held-out)",
                [tuple(x) for x in metrics.get("validation_loss", [])],
            ),
        ],
        x_label="step",
        y_label="cross-entropy per target token",
    )
    counts = internal.get("guard", {}).get("counts", {})
    redactions = bar_chart("Identifiers replaced by the guard, by type (exact)", counts)
    return (
        f'<section id="internal-diagnostics" class="internal"><h2>{escape(INTERNAL_HEADING)}</h2>'
        "<p class='warn'>Everything in this section is computed exactly from the private data "
        "and is <b>not</b> covered by the reported ε. It is for the operator only; "
        "<code>privacy-finetuner report release</code> leaves it out.</p>"
        f"{loss_chart}{redactions}"
        f"<h3>{escape(INTERNAL_FILE)}</h3>{_json_pre(internal)}"
        "</section>"
    )


def render_html(report: dict[str, Any], internal: dict[str, Any] | None = None) -> str:
    """A standalone HTML report (inline CSS and SVG only).

    Without ``internal`` it is the publishable page; with it, a last section headed
    :data:`INTERNAL_HEADING` holds the internal diagnostics.
    """
    metrics, p = report["metrics"], report["privacy"]
    rows = "".join(
        f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in _dp_rows(report)
    )
    target = p.get("target_epsilon")
    eps_chart = line_chart(
        "Privacy spent: ε against steps",
        [("ε", [tuple(x) for x in metrics["epsilon"]])],
        x_label="step",
        y_label="ε",
        hline=(f"target ε = {target:g}", float(target)) if target else None,
    )
    warnings_ = list(report.get("warnings", []))
    if not p.get("epsilon_valid", False):
        warnings_.insert(0, "ε is NOT valid for this run: " + _valid_text(p))
    warn = "".join(f'<p class="warn">{escape(w)}</p>' for w in warnings_)
    card = _markdown_html(render_model_card(report))
    section = _internal_section(internal) if internal is not None else ""
    run_rows = [("Report written (UTC)", str(report.get("created") or "not recorded"))]
    if internal is not None:
        digest = internal.get("data", {}).get("sha256")
        run_rows.append(
            (
                "Training data file SHA-256 (operator only: a fingerprint of the private data, "
                "left out of the release)",
                str(digest) if digest else "no data file (synthetic or not recorded)",
            )
        )
    run_table = "".join(
        f"<tr><th>{escape(k)}</th><td><code>{escape(v)}</code></td></tr>" for k, v in run_rows
    )
    missing = _uncovered(report)
    uncovered = (
        "<p>Not recorded in this report.</p>"
        if missing is None
        else "<ul id='guard-uncovered'>"
        + "".join(f"<li>{escape(c)}</li>" for c in missing)
        + "</ul>"
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Privacy report — {escape(report['model']['base'])}</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<h1>Privacy report</h1><p>Status: <b>{escape(report['status'])}</b>; "
        f"epsilon_valid: <b>{'true' if p.get('epsilon_valid') else 'false'}</b></p>{warn}"
        f"<h2>Run</h2><div class='scroll'><table>{run_table}</table></div>"
        f"<h2>Differential privacy</h2><div class='scroll'><table>{rows}</table></div>"
        f"<h2>Plots</h2>{eps_chart}"
        "<h2>What the context guard does not detect</h2><p>Common kinds of personal data "
        "(NIST SP 800-122, GDPR Art. 4 and 9, HIPAA Safe Harbor) for which the guard has no "
        "detector; any such data in the traces reaches training unchanged, protected by DP "
        f"only:</p>{uncovered}"
        f"<h2>Model card</h2><div class='card' id='model-card'>{card}</div>"
        f"<h2>Released report ({REPORT_FILE})</h2>{_json_pre(report)}"
        f"{section}</body></html>\n"
    )


def write_documents(
    run_dir: Path,
    report: dict[str, Any],
    internal: dict[str, Any] | None = None,
    *,
    html: bool = True,
) -> Path:
    """Write the internal diagnostics, the model card, the HTML report and (last, atomically)
    ``privacy_report.json``.

    Raises:
        UnpublishableReportError: ``report`` holds a field outside the released schema.
    """
    report = {
        **report,
        "created": report.get("created")
        or datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
    }
    check_publishable(report)
    if internal is not None:
        internal = _with_data_hash(internal)
        atomic_write_text(
            run_dir / INTERNAL_FILE, json.dumps(internal, indent=2, default=_json_default) + "\n"
        )
    atomic_write_text(run_dir / "MODEL_CARD.md", render_model_card(report))
    if html:
        atomic_write_text(run_dir / "report.html", render_html(report, internal))
    path = run_dir / REPORT_FILE
    atomic_write_text(path, json.dumps(report, indent=2, default=_json_default) + "\n")
    return path


def _markdown_html(text: str) -> str:
    """CommonMark plus tables, with raw HTML off: a ``<script>`` in the card is shown as text."""
    return str(MarkdownIt("commonmark", {"html": False}).enable("table").render(text))


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (data files can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _with_data_hash(internal: dict[str, Any]) -> dict[str, Any]:
    """Add the SHA-256 of the training data file, so the operator can tell which file was used.

    It goes to the internal diagnostics, not the released report: a hash is an exact function
    of the private data (it confirms a guessed data set), so ε does not cover it.
    """
    data = internal.get("data")
    if not isinstance(data, dict):
        return internal
    source = data.get("source")
    if not isinstance(source, str) or not Path(source).is_file() or "sha256" in data:
        return internal
    return {**internal, "data": {**data, "sha256": file_sha256(Path(source))}}


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory and a rename: never half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
