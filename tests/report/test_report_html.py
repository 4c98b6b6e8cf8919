"""``report.html`` as a privacy officer reads it (issues 18 and 20): the model card rendered as
HTML without passing raw HTML through, readable plots, the run's date and data fingerprint, what
the guard does not detect; no peft template card; no compliance pack for an unfinished run."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from privacy_finetuner.cli.main import main
from privacy_finetuner.report import render_html, render_model_card, write_documents
from privacy_finetuner.report.coverage import COMMON_PII_CATEGORIES, uncovered_categories
from privacy_finetuner.report.svg import line_chart

from .test_report_documents import _internal, _report


def _card_html(html: str) -> str:
    start = html.index("id='model-card'>")
    return html[start : html.index("<h2>Released report", start)]


def test_model_card_is_html_not_a_pre_block() -> None:
    card = _card_html(render_html(_report(), _internal()))
    assert "<pre" not in card and "<h1>" in card and "<h2>Differential privacy statement" in card
    assert "<table>" in card and "<td>Poisson, rate q = 0.05</td>" in card
    assert "<strong>" in card and "**" not in card  # emphasis rendered, not shown as asterisks


def test_html_in_the_card_is_shown_as_text_never_run() -> None:
    report = _report()
    report["warnings"] = ["<script>alert(1)</script> and <img src=x onerror=alert(2)>"]
    html = render_html(report, _internal())
    assert "<script" not in html.lower() and "<img" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in _card_html(html)


def _x_ticks(svg: str) -> list[str]:
    return re.findall(r'class="x-tick"[^>]*>([^<]*)<', svg)


@pytest.mark.parametrize("last", [3, 5, 7, 12, 100, 1037])
def test_step_ticks_are_whole_numbers(last: int) -> None:
    svg = line_chart("ε", [("ε", [(float(s), s / 10) for s in range(last + 1)])], x_label="step",
                     y_label="ε")  # fmt: skip
    ticks = _x_ticks(svg)
    assert len(ticks) >= 2 and all(re.fullmatch(r"\d+", t) for t in ticks), ticks
    assert int(ticks[0]) >= 0 and int(ticks[-1]) <= last


def test_fractional_x_keeps_fractional_ticks() -> None:
    svg = line_chart("f", [("f", [(0.0, 1.0), (0.5, 2.0)])], x_label="t", y_label="y")
    assert "0.1" in _x_ticks(svg) or "0.2" in _x_ticks(svg)


def test_legend_sits_above_the_plot_area() -> None:
    series = [("train (sampled batches)", [(1.0, 5.0), (2.0, 4.0)]),
              ("validation (private held-out)", [(0.0, 6.0), (2.0, 4.5)])]  # fmt: skip
    svg = line_chart("Loss", series, x_label="step", y_label="loss")
    plot_top = float(re.search(r'class="plot-area" x="[^"]+" y="([^"]+)"', svg).group(1))  # type: ignore[union-attr]
    legend_ys = [
        float(y) for y in re.findall(r'<g class="legend">.*?<text x="[^"]+" y="([^"]+)"', svg)
    ]
    assert len(legend_ys) == 2 and all(y < plot_top for y in legend_ys)
    curve_ys = [float(pt.split(",")[1]) for pts in re.findall(r'points="([^"]+)"', svg)
                for pt in pts.split()]  # fmt: skip
    assert curve_ys and min(curve_ys) >= plot_top  # the highest point is still below the legend


def test_page_cannot_scroll_sideways() -> None:
    html = render_html(_report(), _internal())
    style = html[html.index("<style>") : html.index("</style>")]
    assert "max-width:980px" in style and "pre{max-width:100%;overflow-x:auto" in style
    assert "svg{max-width:100%" in style
    # every table sits in a box that scrolls on its own
    assert html.count("<div class='scroll'><table>") == 2


def test_run_date_and_data_hash(tmp_path: Path) -> None:
    data = tmp_path / "traces.jsonl"
    data.write_bytes(b'{"messages": []}\n' * 3)
    internal = _internal()
    internal["data"]["source"] = str(data)
    write_documents(tmp_path, _report(), internal)
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    released = json.loads((tmp_path / "privacy_report.json").read_text(encoding="utf-8"))
    created = datetime.fromisoformat(released["created"])
    assert created.tzinfo is not None and released["created"] in html
    assert released["created"] in (tmp_path / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert digest in html
    kept = json.loads((tmp_path / "internal_diagnostics.json").read_text(encoding="utf-8"))
    assert kept["data"]["sha256"] == digest
    # the hash is a fingerprint of the private data: never in the released documents
    assert digest not in json.dumps(released) and digest not in render_html(released)


def test_synthetic_data_has_no_hash_and_says_so(tmp_path: Path) -> None:
    internal = _internal()
    internal["data"]["source"] = "synthetic(n=300)"
    write_documents(tmp_path, _report(), internal)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "no data file (synthetic or not recorded)" in html


def test_report_lists_what_the_guard_does_not_detect() -> None:
    assert uncovered_categories(()) == list(COMMON_PII_CATEGORIES.values())
    assert "e-mail addresses" not in uncovered_categories(("EMAIL",))
    guard = pytest.importorskip("privacy_finetuner.guard")
    missing = uncovered_categories(guard.ENTITY_TYPES)
    assert "passport numbers" in missing and "e-mail addresses" not in missing
    report = _report()
    report["guard"]["entity_types"] = list(guard.ENTITY_TYPES)
    html = render_html(report)
    listed = re.search(r"<ul id='guard-uncovered'>(.*?)</ul>", html).group(1)  # type: ignore[union-attr]
    assert re.findall(r"<li>(.*?)</li>", listed) == missing
    assert "passport numbers" in _card_html(html) and "e-mail addresses" not in listed
    report["guard"]["entity_types"] = []  # guard not applied: nothing is detected
    assert "e-mail addresses" in render_model_card(report)
    del report["guard"]["entity_types"]  # an older report: say so, invent nothing
    assert "not recorded" in render_model_card(report) and "guard-uncovered" not in render_html(
        report
    )


def _run_dir(tmp_path: Path, state: str) -> Path:
    run = tmp_path / state
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"state": state}), encoding="utf-8")
    return run


def test_compliance_refuses_an_unfinished_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run_dir(tmp_path, "interrupted")
    with pytest.raises(SystemExit) as exc:
        main(["report", "compliance", str(run)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "not a finished run (interrupted)" in err and "--allow-unfinished" in err
    assert len(err.strip().splitlines()) == 1 and not (run / "COMPLIANCE.md").exists()
    main(["report", "compliance", str(run), "--allow-unfinished"])
    assert "interrupted" in (run / "COMPLIANCE.md").read_text(encoding="utf-8")
    done = _run_dir(tmp_path, "completed")
    main(["report", "compliance", str(done)])
    assert (done / "COMPLIANCE.md").is_file()


def test_lora_save_ships_no_template_readme(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from privacy_finetuner.config import ModelConfig
    from privacy_finetuner.data import generate_traces
    from privacy_finetuner.modeling import apply_finetuning, load_base_model, save_trained

    tiny = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
            "vocab_size": 400, "tokenizer_corpus_size": 30}  # fmt: skip
    config = ModelConfig.model_validate({"name": "tiny", "finetuning": "lora", "tiny": tiny})
    corpus = generate_traces(30, seed=5).traces
    loaded: Any = load_base_model(config, max_length=64, seed=0, tokenizer_corpus=corpus)
    save_trained(apply_finetuning(loaded, config.lora), tmp_path)
    assert (tmp_path / "model" / "adapter_model.safetensors").is_file()
    assert not list(tmp_path.rglob("README.md"))
