"""Accounting speed and accuracy: our `epsilon` / `calibrate` against full-precision dp-accounting.

Baseline: dp-accounting's PLD accountant at its default 1e-4 grid, and a naive calibration that
bisects at that full precision. Targets (issue 2): `epsilon` for 10,000 steps with PLD ≤ 2 s,
`calibrate` ≤ 15 s, both within 2% of the full-precision answer.

    python benchmarks/bench_accounting.py [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from typing import Any

import dp_accounting
from dp_accounting.pld import pld_privacy_accountant

from privacy_finetuner.accounting import DpSegment, calibrate_noise_multiplier, compute_epsilon

DELTA = 1e-5
SAMPLE_RATE = 0.01
STEPS = 10_000
TARGET_EPSILON = 3.0


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _reference_epsilon(sigma: float) -> float:
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(SAMPLE_RATE, dp_accounting.GaussianDpEvent(sigma)),
        STEPS,
    )
    return float(pld_privacy_accountant.PLDAccountant().compose(event).get_epsilon(DELTA))


def _naive_calibration() -> float:
    """Bisection at full PLD precision: what a user would write without our two-grid search."""
    low, high = 0.5, 4.0
    while high / low - 1 > 1e-3:
        mid = math.sqrt(low * high)
        if _reference_epsilon(mid) <= TARGET_EPSILON:
            high = mid
        else:
            low = mid
    return high


def run() -> list[dict[str, Any]]:
    ref_eps, ref_eps_s = _timed(lambda: _reference_epsilon(1.0))
    eps, eps_s = _timed(lambda: compute_epsilon([DpSegment(1.0, SAMPLE_RATE, STEPS)], delta=DELTA))
    naive_sigma, naive_s = _timed(_naive_calibration)
    cal, cal_s = _timed(
        lambda: calibrate_noise_multiplier(
            target_epsilon=TARGET_EPSILON, delta=DELTA, sample_rate=SAMPLE_RATE, steps=STEPS
        )
    )
    return [
        {
            "task": "epsilon (σ=1, q=0.01, 10k steps, PLD)",
            "ours_s": eps_s,
            "baseline_s": ref_eps_s,
            "target_s": 2.0,
            "ours_value": eps,
            "baseline_value": ref_eps,
            "rel_error": abs(eps - ref_eps) / ref_eps,
        },
        {
            "task": "calibrate (ε=3, q=0.01, 10k steps, PLD)",
            "ours_s": cal_s,
            "baseline_s": naive_s,
            "target_s": 15.0,
            "ours_value": cal.noise_multiplier,
            "baseline_value": naive_sigma,
            "rel_error": abs(cal.noise_multiplier - naive_sigma) / naive_sigma,
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="also print a JSON line")
    args = parser.parse_args()
    rows = run()
    header = f"{'task':42} {'ours s':>8} {'baseline s':>11} {'target s':>9} {'ours':>9} {'baseline':>9} {'rel.err':>8} {'ok':>4}"
    print(header)
    print("-" * len(header))
    for r in rows:
        ok = r["ours_s"] <= r["target_s"] and r["rel_error"] <= 0.02
        print(
            f"{r['task']:42} {r['ours_s']:8.2f} {r['baseline_s']:11.2f} {r['target_s']:9.1f} "
            f"{r['ours_value']:9.4f} {r['baseline_value']:9.4f} {r['rel_error']:8.1e} {'yes' if ok else 'NO':>4}"
        )
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
