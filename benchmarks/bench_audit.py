"""Empirical privacy of non-private vs DP (ε = 8) fine-tuning on the synthetic agent traces.

Both runs use the main job (``run_job``) on the same data: synthetic agent traces plus ``m``
audit canaries (random 12-digit recovery codes stated by the assistant), each included with
probability ½ and, when included, repeated ``--repeats`` times under one user id. Privacy is
per user, so one canary is one privacy unit. The non-private run is the same pipeline with the
noise switched off and clipping made inactive (C = 10⁴) while the accountant still records
σ = 10: the run *reports* a tiny ε (``reported_epsilon``), which is the planted bug the audit must
catch (``violation: true``); its ``epsilon`` is null because it is not private at all.

Targets (issue 7): non-private, exposure ≥ 10 bits and ε_lower ≥ 1; DP at ε = 8, median
exposure ≤ 2 bits.

    python benchmarks/bench_audit.py [--json] [--epochs E] [--canaries M] [--traces N]

(from the repository root with the package installed editable, as ``pip install -e .`` does, so
that ``benchmarks.audit_experiment`` resolves; ``python -m benchmarks.bench_audit`` works too).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.audit_experiment import run_audited_job, write_audit_data
from privacy_finetuner.config.schema import JobConfig
from privacy_finetuner.data.audit_canaries import plan_canaries


def _config(args: argparse.Namespace, data: tuple[Path, Path], private: bool) -> JobConfig:
    privacy: dict[str, Any] = {
        "privacy_unit": "user",
        "delta": 1e-5,
        "max_physical_batch_size": 64,
    }
    if private:
        privacy.update({"target_epsilon": args.epsilon, "max_grad_norm": 1.0})
    else:
        # The planted bug: the engine adds no noise, the accountant records σ = 10 and the run
        # reports a tiny ε. The audit must catch it (violation: true).
        privacy.update({"target_epsilon": None, "noise_multiplier": 10.0, "max_grad_norm": 1e4})
    return JobConfig.model_validate(
        {
            "data": {"path": str(data[0]), "validation_path": str(data[1]), "max_length": 96},
            "guard": {"enabled": False},  # audit DP itself: the guard would redact the codes
            "training": {
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "learning_rate": args.lr,
                "eval_every": 10_000,
                "eval_batches": 1,
                "checkpoint_every": 10_000,
                "seed": args.seed,
            },
            "privacy": privacy,
            "output": {"report_html": True},
        }
    )


def _summary(result: Any, audit: Any, private: bool, seconds: float) -> dict[str, Any]:
    d = audit.to_dict()
    mia = {m["attack"]: m for m in d["mia"]}
    loss = mia.get("loss threshold", {})
    return {
        "epsilon": result.epsilon if private else None,
        "reported_epsilon": result.epsilon,
        "epsilon_lower": d["epsilon_lower"],
        "median_exposure_bits": d["exposure"].get("median_bits"),
        "max_exposure_bits": d["exposure"].get("max_bits"),
        "median_rank_exposure_bits": d["exposure"].get("median_rank_bits"),
        "mia_auc": loss.get("auc"),
        "mia_tpr_at_1pct_fpr": loss.get("tpr_at_1pct_fpr"),
        "mia_auc_zlib": mia.get("zlib-calibrated", {}).get("auc"),
        "violation": d["violation"],
        "steps": result.steps,
        "noise_multiplier": result.noise_multiplier if private else 0.0,
        "sample_rate": result.sample_rate,
        "seconds": round(seconds, 1),
        "run_dir": str(result.run_dir),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    parser.add_argument("--traces", type=int, default=40, help="synthetic agent traces")
    parser.add_argument("--canaries", type=int, default=64, help="audit canaries m")
    parser.add_argument("--repeats", type=int, default=10, help="copies of an included canary")
    parser.add_argument("--epochs", type=float, default=6.0)
    parser.add_argument("--batch-size", type=int, default=4, help="expected users per batch")
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--candidates", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here")
    parser.add_argument(
        "--only", choices=("nonprivate", "private"), default=None, help="run one setting"
    )
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="bench_audit_"))
    plan = plan_canaries(args.canaries, repeats=args.repeats, seed=args.seed)
    data = write_audit_data(
        root / "data", plan, traces=args.traces, validation_traces=8, seed=args.seed
    )
    out: dict[str, Any] = {}
    for name, private in (("nonprivate", False), ("private", True)):
        if args.only not in (None, name):
            continue
        start = time.perf_counter()
        result, audit = run_audited_job(
            _config(args, data, private),
            root / name,
            plan,
            noiseless=not private,
            candidates=args.candidates,
        )
        out[name] = _summary(result, audit, private, time.perf_counter() - start)
        if not args.json:
            print(f"{name}: {audit.message}")
    keys = ("epsilon", "epsilon_lower", "median_exposure_bits", "max_exposure_bits", "mia_auc")
    if not args.json and len(out) == 2:
        print(f"{'':24}{'non-private':>14}{'DP':>14}")
        for key in (*keys, "mia_tpr_at_1pct_fpr", "steps", "seconds"):
            row = [out[n][key] for n in ("nonprivate", "private")]
            cells = "".join(
                f"{'—' if v is None else (f'{v:.3g}' if isinstance(v, float) else v):>14}"
                for v in row
            )
            print(f"{key:24}{cells}")
        print(f"runs in {root}")
    else:
        print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
