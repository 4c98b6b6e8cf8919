"""run_audit, audit.json, the HTML section and the CLI exit codes, with injected scorers (no
model): a private-looking run passes, a run whose canaries are memorised while it claims ε = 1
(noise switched off) fails with exit code 3."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from privacy_finetuner.audit import runner
from privacy_finetuner.audit.runner import analyse_scores, group_privacy, render_section, run_audit
from privacy_finetuner.cli.main import main
from privacy_finetuner.data.audit_canaries import (
    CANARY_FILE,
    CanaryPlan,
    canary_traces,
    draw_candidates,
    plan_canaries,
)
from privacy_finetuner.errors import DataError, InvalidParameterError, NotFoundError


def _scorer(plan: CanaryPlan, *, memorised: bool, seed: int = 0) -> runner.Scorer:
    """NLL ≈ 27.6 nats (12 random digits) for everything, far lower for memorised members."""
    members = {plan.answer.format(secret=c.secret) for c in plan.members}
    rng = np.random.default_rng(seed)

    def score(replies: Sequence[str]) -> npt.NDArray[np.float64]:
        base = 27.6 + rng.normal(0, 1.0, size=len(replies))
        if memorised:
            base -= np.array([20.0 if r in members else 0.0 for r in replies])
        return np.asarray(base, dtype=np.float64)

    return score


def _run_dir(tmp_path: Path, *, epsilon: float | None, unit: str = "user", m: int = 200) -> Path:
    run = tmp_path / "run"
    run.mkdir(parents=True)
    plan = plan_canaries(m, repeats=10, seed=3)
    plan.save(run / CANARY_FILE)
    report = {"privacy": {"epsilon": epsilon, "delta": 1e-5, "privacy_unit": unit}}
    (run / "privacy_report.json").write_text(json.dumps(report), encoding="utf-8")
    return run


def test_plan_is_reproducible_and_roundtrips(tmp_path: Path) -> None:
    plan = plan_canaries(50, repeats=3, seed=1)
    assert plan == plan_canaries(50, repeats=3, seed=1)
    assert len({c.secret for c in plan.canaries}) == 50
    assert 10 < len(plan.members) < 40
    plan.save(tmp_path / "p.json")
    assert CanaryPlan.load(tmp_path / "p.json") == plan
    records = canary_traces(plan)
    assert len(records) == 3 * len(plan.members)
    assert records[0]["messages"][-1]["role"] == "assistant"  # the secret is a training target
    assert plan.members[0].secret in records[0]["messages"][-1]["content"]
    candidates = draw_candidates(plan, 1000)
    assert not set(candidates) & {c.secret for c in plan.canaries}
    with pytest.raises(InvalidParameterError):
        plan_canaries(1)
    (tmp_path / "bad.json").write_text("[]", encoding="utf-8")
    with pytest.raises(DataError):
        CanaryPlan.load(tmp_path / "bad.json")


def test_private_run_is_consistent(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, epsilon=8.0)
    plan = CanaryPlan.load(run / CANARY_FILE)
    result = run_audit(run, candidates=2000, scorer=_scorer(plan, memorised=False))
    assert not result.violation
    assert result.one_run.epsilon_lower < 1.0
    assert result.exposure["median_bits"] < 3.0
    assert 0.3 < result.mia[0].auc < 0.7
    saved = json.loads((run / "audit.json").read_text(encoding="utf-8"))
    assert saved["violation"] is False and saved["claimed_epsilon"] == 8.0
    html = (run / "audit.html").read_text(encoding="utf-8")
    assert "Empirical privacy" in html and html.count("<svg") == 2


def test_planted_bug_memorised_canaries_under_a_small_claimed_epsilon(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, epsilon=1.0)
    plan = CanaryPlan.load(run / CANARY_FILE)
    result = run_audit(run, candidates=2000, scorer=_scorer(plan, memorised=True))
    assert result.violation
    assert result.one_run.epsilon_lower > 1.0
    assert result.exposure["median_bits"] > 10
    assert result.mia[0].auc > 0.99
    assert "NOT as private" in result.message


def test_example_level_privacy_is_audited_as_a_group(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, epsilon=1.0, unit="example")
    plan = CanaryPlan.load(run / CANARY_FILE)
    result = run_audit(run, candidates=500, scorer=_scorer(plan, memorised=True), write=False)
    assert result.group_size == 10
    assert result.claimed_epsilon == pytest.approx(10.0)
    assert not result.violation  # 10 repeats per canary: the claim is 10ε with a large δ
    assert any("δ for the audited unit" in n for n in result.notes)
    assert not (run / "audit.json").exists()


def test_group_privacy() -> None:
    assert group_privacy(2.0, 1e-6, 1) == (2.0, 1e-6)
    eps, delta = group_privacy(1.0, 1e-6, 3)
    assert eps == 3.0 and delta == pytest.approx(3 * np.exp(2.0) * 1e-6)
    with pytest.raises(InvalidParameterError):
        group_privacy(1.0, 1e-6, 0)


def test_missing_pieces(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        run_audit(tmp_path / "nope")
    with pytest.raises(NotFoundError, match=r"audit_canaries\.json"):
        run_audit(tmp_path)
    run = _run_dir(tmp_path, epsilon=None)
    plan = CanaryPlan.load(run / CANARY_FILE)
    result = run_audit(run, candidates=300, scorer=_scorer(plan, memorised=True), write=False)
    assert result.claimed_epsilon is None and not result.violation
    assert "no proven ε" in result.message


def test_render_section_escapes_and_handles_no_members() -> None:
    nll = np.array([30.0, 29.0])
    result = analyse_scores(
        canary_nll=nll,
        included=np.array([False, False]),
        candidate_nll=np.random.default_rng(0).normal(30, 1, 100),
        texts=["<b>1</b>", "2"],
        space_size=1e12,
        proven_epsilon=2.0,
        delta=1e-5,
    )
    html = render_section(result.to_dict())
    assert "<section" in html and "no data" in html and result.mia == []


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI loads no model: the scorer memorises when the report claims ε < 2."""

    def fake(run: Path, plan: CanaryPlan, batch_size: int) -> runner.Scorer:
        report = json.loads((run / "privacy_report.json").read_text(encoding="utf-8"))
        return _scorer(plan, memorised=report["privacy"]["epsilon"] < 2)

    monkeypatch.setattr(runner, "_model_scorer", fake)


@pytest.mark.usefixtures("fake_model")
def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _run_dir(tmp_path / "a", epsilon=8.0)
    main(["audit", str(good), "--candidates", "1000", "--json"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(line)["violation"] is False
    bad = _run_dir(tmp_path / "b", epsilon=1.0)
    with pytest.raises(SystemExit) as exc:
        main(["audit", str(bad), "--candidates", "1000"])
    assert exc.value.code == 3
    err = capsys.readouterr().err
    assert "exceeds the proven" in " ".join(err.split())
    with pytest.raises(SystemExit) as missing:
        main(["audit", str(tmp_path / "none")])
    assert missing.value.code == 2


def test_section_is_embedded_in_report_html_once(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, epsilon=8.0)
    (run / "report.html").write_text(
        "<html><body><h1>r</h1><h2>Model card</h2><pre>x</pre></body></html>", encoding="utf-8"
    )
    plan = CanaryPlan.load(run / CANARY_FILE)
    for _ in range(2):
        run_audit(run, candidates=300, scorer=_scorer(plan, memorised=False))
    html = (run / "report.html").read_text(encoding="utf-8")
    assert html.count('<section id="empirical-privacy">') == 1
    assert html.index("Empirical privacy") < html.index("Model card")
    assert runner.section_for_run(run).startswith("<section")
    assert runner.section_for_run(tmp_path) == ""


def test_training_hooks(tmp_path: Path) -> None:
    from privacy_finetuner.audit.runner import finish_audit
    from privacy_finetuner.data.audit_canaries import add_audit_canaries

    traces, plan = add_audit_canaries([], canaries=20, repeats=2, seed=4)
    assert len(traces) == 2 * len(plan.members)
    assert traces[0].messages[-1].role == "assistant"
    assert {t.user_id for t in traces} == {c.id for c in plan.members}
    run = tmp_path / "run"
    run.mkdir()
    result = finish_audit(run, plan, candidates=200, scorer=_scorer(plan, memorised=False))
    assert (run / CANARY_FILE).is_file() and (run / "audit.json").is_file()
    assert result.claimed_epsilon is None
