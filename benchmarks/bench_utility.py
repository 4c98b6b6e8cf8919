"""Utility of DP fine-tuning: the DP model against a non-private one after the same steps.

Both start from the same tiny model (the one of ``train --example support-agent``, same seed),
see the same guarded synthetic traces with the same tokenizer, use AdamW with the same warmup and
the same (expected) batch size, and take the same number of steps. Each run has its own learning
rate (``--lr`` for DP, ``--baseline-lr``); the default 1e-2 is the best measured for both at this
batch size (docs/training.md). The DP run goes through ``run_job`` (Poisson sampling,
per-example clipping, noise σ calibrated to the target ε); the baseline uses fixed-size shuffled
batches and no clipping or noise. Reported: validation loss and tool-call exact match (greedy
generation of the first tool call for held-out users' prompts; function name and parsed
arguments compared), and the function-name match.

Synthetic data is free, so the default uses 20 000 traces: at the same batch a smaller sampling
rate q needs less noise σ for the same ε.

    .venv/bin/python benchmarks/bench_utility.py            # ε = 8, δ = 1e-5 (~20 min, 2 cores)
    .venv/bin/python benchmarks/bench_utility.py --json
    .venv/bin/python benchmarks/bench_utility.py --steps 40 --n 600 --batch-size 32  # quick look
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from privacy_finetuner.config import JobConfig, load_config
from privacy_finetuner.training import run_job
from privacy_finetuner.training.evaluation import tool_call_scores, validation_loss
from privacy_finetuner.training.examples import example_overrides
from privacy_finetuner.training.prepare import PreparedData, prepare_data


def _config(args: argparse.Namespace, run_dir: Path) -> JobConfig:
    return load_config(
        None,
        {
            "data": {
                "synthetic": {"n": args.n, "seed": args.seed},
                "max_length": args.max_length,
                "validation_split": 0.1,
            },
            "guard": {"enabled": True, "strategy": "redact"},
            # the model of `train --example support-agent`
            "model": example_overrides("support-agent")["model"],
            "training": {
                "max_steps": args.steps,
                "batch_size": args.batch_size,
                "learning_rate": args.lr,
                "warmup_steps": args.warmup,
                "seed": args.seed,
                "eval_every": max(1, args.steps // 4),
                "eval_batches": 2,
                "checkpoint_every": 10_000,
            },
            "privacy": {
                "target_epsilon": args.epsilon,
                "delta": args.delta,
                "max_grad_norm": args.clip,
                "max_physical_batch_size": args.physical_batch,
            },
            "output": {"dir": str(run_dir)},
        },
    )


def _non_private(prepared: PreparedData, config: JobConfig, steps: int, lr: float) -> float:
    """Plain AdamW on fixed-size shuffled batches (mean token loss), with the DP run's warmup;
    returns seconds taken. A batch is processed in micro-batches of ``max_physical_batch_size``
    (faster on CPU); their losses are weighted by target tokens, so each step's gradient is
    exactly that of the mean token loss over the whole batch."""
    import torch

    from privacy_finetuner.data.collate import make_collate_fn
    from privacy_finetuner.data.tokenize import IGNORE_INDEX

    model = prepared.loaded.model
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    collate = make_collate_fn(prepared.loaded.tokenizer.pad_token_id)
    batch_size, micro = config.training.batch_size, config.privacy.max_physical_batch_size
    warmup = config.training.warmup_steps
    rng = random.Random(config.training.seed)
    order: list[int] = []
    started = time.perf_counter()
    for step in range(steps):
        if len(order) < batch_size:
            order = list(range(len(prepared.train)))
            rng.shuffle(order)
        idx, order = order[:batch_size], order[batch_size:]
        for group in optimizer.param_groups:
            group["lr"] = lr * (min(1.0, (step + 1) / warmup) if warmup else 1.0)
        examples = [prepared.train[i] for i in idx]
        total = sum(sum(1 for label in e.labels[1:] if label != IGNORE_INDEX) for e in examples)
        optimizer.zero_grad()
        for start in range(0, len(examples), micro):
            batch = collate(examples[start : start + micro])
            targets = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            (model(**batch).loss * (targets / total)).backward()
        optimizer.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="synthetic traces")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-2, help="learning rate of the DP run")
    parser.add_argument(
        "--baseline-lr", type=float, default=1e-2, help="learning rate of the non-private run"
    )
    parser.add_argument("--warmup", type=int, default=30, help="linear warmup steps (both runs)")
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--physical-batch", type=int, default=32, help="micro-batch size (speed only, both runs)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

    with tempfile.TemporaryDirectory() as tmp:
        config = _config(args, Path(tmp) / "dp")
        started = time.perf_counter()
        result = run_job(config, Path(tmp) / "dp", progress=not args.json)
        dp_seconds = time.perf_counter() - started
        report = json.loads(Path(result.report_path or "").read_text())
    dp_final = report["metrics"]["final"]

    prepared = prepare_data(config)  # same seed: same data, split, tokenizer and initial weights
    baseline_seconds = _non_private(prepared, config, args.steps, args.baseline_lr)
    pad = prepared.loaded.tokenizer.pad_token_id
    base_loss = validation_loss(prepared.loaded.model, prepared.validation, pad_token_id=pad)
    scores = tool_call_scores(prepared.loaded.model, prepared.loaded.tokenizer, prepared.prompts)
    base_em = (scores or {}).get("exact_match", 0.0)
    base_names = (scores or {}).get("name_match", 0.0)

    dp_em, dp_loss = dp_final["tool_call_exact_match"] or 0.0, dp_final["loss"]
    dp_names = dp_final.get("tool_call_name_match") or 0.0
    ratio = dp_em / base_em if base_em else math.nan
    summary: dict[str, Any] = {
        "epsilon": result.epsilon,
        "delta": args.delta,
        "noise_multiplier": result.noise_multiplier,
        "sample_rate": result.sample_rate,
        "steps": result.steps,
        "batch_size": args.batch_size,
        "learning_rate": {"dp": args.lr, "non_private": args.baseline_lr},
        "warmup_steps": args.warmup,
        "train_examples": len(prepared.train),
        "tool_call_prompts": len(prepared.prompts),
        "dp": {"validation_loss": dp_loss, "tool_call_exact_match": dp_em, "tool_name_match": dp_names,
               "seconds": round(dp_seconds, 1)},
        "non_private": {"validation_loss": base_loss, "tool_call_exact_match": base_em, "tool_name_match": base_names,
                        "seconds": round(baseline_seconds, 1)},
        "exact_match_ratio": ratio,
        "target_ratio": 0.9,
        "meets_target": bool(ratio >= 0.9) if math.isfinite(ratio) else False,
    }  # fmt: skip
    if args.json:
        print(json.dumps(summary, sort_keys=True))
        return
    print(f"\nUtility at ε = {result.epsilon:.3f} (target {args.epsilon}), δ = {args.delta:g}, "
          f"σ = {result.noise_multiplier:.3f}, q = {result.sample_rate:.4f}, "
          f"{result.steps} steps, batch {args.batch_size}, {len(prepared.train)} train examples, "
          f"lr {args.lr:g} (DP) / {args.baseline_lr:g} (non-private), warmup {args.warmup}")  # fmt: skip
    print(f"{'model':<14}{'val loss':>10}{'tool-call EM':>14}{'function name':>15}{'seconds':>9}")
    print(f"{'non-private':<14}{base_loss:>10.4f}{base_em:>14.3f}{base_names:>15.3f}"
          f"{baseline_seconds:>9.0f}")  # fmt: skip
    print(f"{'DP':<14}{dp_loss:>10.4f}{dp_em:>14.3f}{dp_names:>15.3f}{dp_seconds:>9.0f}")
    print(f"DP / non-private exact match: {ratio:.3f} (target ≥ 0.90: "
          f"{'met' if summary['meets_target'] else 'NOT met'}); "
          f"{len(prepared.prompts)} held-out prompts")  # fmt: skip


if __name__ == "__main__":
    main()
