from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from privacy_finetuner.accounting import DpSegment, compute_epsilon
from privacy_finetuner.accounting.relations import dp_accounting_name, epsilon_under_relation
from privacy_finetuner.errors import InvalidParameterError
from privacy_finetuner.report import (
    INTERNAL_FILE,
    INTERNAL_HEADING,
    UnpublishableReportError,
    check_publishable,
    render_html,
    render_model_card,
    write_documents,
)


def _report(*, valid: bool = True) -> dict[str, Any]:
    reasons = [] if valid else ["privacy.secure_mode is false: seeded, replayable noise"]
    return {
        "schema_version": 2, "kind": "released", "version": "0.1.0", "status": "completed",
        "privacy": {
            "epsilon": 7.9, "delta": 1e-5, "target_epsilon": 8.0, "epsilon_valid": valid,
            "epsilon_invalid_reasons": reasons, "accountant": "pld", "privacy_unit": "user",
            "neighbouring": "zero_out", "neighbouring_dp_accounting": "REPLACE_SPECIAL",
            "epsilon_replace_one": 11.25, "sampling": "poisson", "sample_rate": 0.05,
            "expected_batch_size": 20.0, "noise_multiplier": 0.9, "max_grad_norm": 1.0,
            "steps": 100, "planned_steps": 100, "num_units": 400, "max_examples_per_user": 4,
            "secure_mode": valid, "history": [],
        },
        "data": {"source_kind": "file", "max_length": 256, "skip_invalid": True,
                 "missing_user_id": "refuse", "validation": "private (not published)"},
        "guard": {"enabled": True, "applied": True, "strategy": "redact", "sensitivity": "high",
                  "note": None},
        "model": {"base": "tiny", "method": "full", "trainable_parameters": 10,
                  "total_parameters": 10},
        "training": {"seed": 0},
        "metrics": {"epsilon": [[0, 0.0], [2, 7.9]], "final": {}, "final_data": None},
        "environment": {"python": "3.11"},
        "warnings": [],
        "internal_diagnostics": "see internal_diagnostics.json",
    }  # fmt: skip


def _internal() -> dict[str, Any]:
    return {
        "kind": "internal",
        "data": {"traces": 1037, "invalid_records": 2, "truncated": 31},
        "guard": {"counts": {"EMAIL": 123, "PERSON": 347}},
        "metrics": {
            "train_loss": [[1, 5.0123456], [2, 4.0765432]],
            "validation_loss": [[0, 6.0918273], [2, 4.5555123]],
            "final": {"loss": 4.5555123, "perplexity": 95.17},
        },
    }


def test_model_card_has_the_dp_statement_and_the_relation() -> None:
    card = render_model_card(_report())
    for needle in (
        "(7.9, 1e-05)-differential privacy at the user level** under the zero-out",
        "REPLACE_SPECIAL",
        "the number of users N = 400 is fixed and published",
        "replace-one relation (one user's data swapped for any other) the same run gives ε = 11.2",
        "Poisson, rate q = 0.05",
        "| Clip norm C | 1 |",
        "| Noise multiplier σ | 0.9 |",
        "| Steps | 100 |",
        "| Data set size N (users, public) | 400 |",
        "| ε valid | yes |",
        "PLD",
        "How to DP-fy ML",
        "No quality figure is published",
    ):
        assert needle in card, needle
    assert "add/remove" not in card.split("under the zero-out")[0]  # not the relation stated


def test_invalid_epsilon_is_said_plainly_everywhere() -> None:
    report = _report(valid=False)
    card = render_model_card(report)
    assert "NOT a valid guarantee for this run (`epsilon_valid: false`)" in card
    assert "Reason: privacy.secure_mode is false: seeded, replayable noise." in card
    assert "would satisfy" in card and "| ε valid | NO (epsilon_valid: false)" in card
    html = render_html(report)
    assert "epsilon_valid: <b>false</b>" in html and "replayable" in html
    assert "epsilon_valid: <b>true</b>" in render_html(_report())


def test_released_documents_hold_no_internal_value(tmp_path: Path) -> None:
    path = write_documents(tmp_path, _report(), _internal())
    released = {
        "privacy_report.json": path.read_text(),
        "MODEL_CARD.md": (tmp_path / "MODEL_CARD.md").read_text(),
        "publishable HTML": render_html(_report()),
    }
    secrets = ("5.012", "4.076", "6.091", "4.555", "95.17", "1037", "123", "347")
    for name, text in released.items():
        for s in secrets:
            assert s not in text, (name, s)
    internal = json.loads((tmp_path / INTERNAL_FILE).read_text())
    assert internal["guard"]["counts"]["EMAIL"] == 123
    html = (tmp_path / "report.html").read_text()
    head, _, section = html.partition(INTERNAL_HEADING)
    assert section and "4.555" in section and "5.012" not in head and "EMAIL" not in head
    assert html.count("<svg") == 3  # ε in the released part; losses and counts in the internal
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<script" not in html


@pytest.mark.parametrize(
    ("where", "key"),
    [((), "train_loss"), (("metrics",), "train_loss"), (("guard",), "counts"),
     (("data",), "traces"), (("data",), "invalid")],
)  # fmt: skip
def test_a_report_with_exact_statistics_cannot_be_written(
    tmp_path: Path, where: tuple[str, ...], key: str
) -> None:
    report = _report()
    target = report
    for part in where:
        target = target[part]
    target[key] = [[1, 5.0123456]]
    with pytest.raises(UnpublishableReportError, match=".".join((*where, key))):
        check_publishable(report)
    with pytest.raises(UnpublishableReportError):
        write_documents(tmp_path, report)
    assert not (tmp_path / "privacy_report.json").exists()


def test_relations_zero_out_equals_add_remove_and_replace_one_costs_more() -> None:
    segments = [DpSegment(noise_multiplier=1.0, sample_rate=0.05, steps=200)]
    plain = compute_epsilon(segments, delta=1e-5)
    zero_out = epsilon_under_relation(segments, delta=1e-5, relation="zero_out")
    replace = epsilon_under_relation(segments, delta=1e-5, relation="replace_one")
    assert zero_out == pytest.approx(plain, rel=1e-6)
    assert replace > 1.2 * zero_out
    # RDP cannot do replace-one under Poisson sampling; PLD is used for it either way.
    assert epsilon_under_relation(
        segments, delta=1e-5, relation="replace_one", accountant="rdp"
    ) == pytest.approx(replace)
    assert dp_accounting_name("zero_out") == "REPLACE_SPECIAL"
    assert epsilon_under_relation([], delta=1e-5, relation="replace_one") == 0.0
    with pytest.raises(InvalidParameterError, match="unknown neighbouring relation"):
        epsilon_under_relation(segments, delta=1e-5, relation="swap")


def test_gaussian_calibration_matches_dp_accounting() -> None:
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant

    from privacy_finetuner.accounting.relations import gaussian_noise_for_epsilon

    for epsilon in (0.5, 4.0):
        sigma = gaussian_noise_for_epsilon(epsilon, delta=1e-5)
        acct = pld_privacy_accountant.PLDAccountant()
        acct.compose(dp_accounting.GaussianDpEvent(sigma))
        assert acct.get_epsilon(target_delta=1e-5) == pytest.approx(epsilon, rel=2e-3)
    with pytest.raises(InvalidParameterError):
        gaussian_noise_for_epsilon(float("inf"), delta=1e-5)


def test_dp_mean_is_unbiased_with_the_calibrated_noise() -> None:
    """The released estimate is the clipped mean plus N(0, (σ·clip/n)²), σ for (ε, δ)."""
    import statistics

    from privacy_finetuner.accounting.relations import gaussian_noise_for_epsilon
    from privacy_finetuner.training.dp_validation import dp_mean

    values = [0.5, 2.0, 9.0, -1.0] * 25  # 9.0 clips to 6.0, -1.0 to 0.0
    clipped_mean = (0.5 + 2.0 + 6.0 + 0.0) / 4
    draws = [dp_mean(values, clip=6.0, epsilon=2.0, delta=1e-5).value for _ in range(3000)]
    sigma = gaussian_noise_for_epsilon(2.0, delta=1e-5)
    expected_sd = sigma * 6.0 / len(values)
    assert statistics.stdev(draws) == pytest.approx(expected_sd, rel=0.1)
    assert abs(statistics.fmean(draws) - clipped_mean) < 5 * expected_sd / len(draws) ** 0.5
    estimate = dp_mean(values, clip=6.0, epsilon=2.0, delta=1e-5)
    assert estimate.noise_multiplier == sigma and estimate.to_report()["epsilon"] == 2.0


def test_model_card_states_the_dp_validation_estimate() -> None:
    report = _report()
    report["metrics"]["dp_validation"] = {
        "loss": 3.21, "perplexity": 24.8, "clip": 5.99, "noise_multiplier": 1.08,
        "epsilon": 7.9, "delta": 1e-5, "aggregation": "mean", "composition": "parallel",
    }  # fmt: skip
    check_publishable(report)
    card = render_model_card(report)
    assert "DP estimate on the private held-out users: validation loss ≈ 3.21" in card
    assert "parallel composition" in card and "No quality figure is published" not in card
