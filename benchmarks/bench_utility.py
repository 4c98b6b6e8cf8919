"""Utility of DP fine-tuning: the DP model against a non-private one after the same steps.

DP fine-tuning is meant for a model pretrained on public data, adapted to private data. No model
hub is reachable here, so the benchmark makes that setting itself, in two stages:

1. **Public pretraining** (non-private, cached in ``--base-dir``): the tiny Llama-style model of
   ``train --example support-agent`` learns on synthetic traces of the *support* and *booking*
   agents only. It learns the chat format and to copy ids from a request into a tool call, but it
   has never seen a banking tool (``get_balance``, ``transfer_funds``, ``block_card``) or its
   arguments.
2. **Private fine-tuning**: from that base, on synthetic *banking* traces (other users, other
   seed, through the context guard), once with DP-SGD at (ε, δ) through ``run_job`` (Poisson
   sampling, per-example clipping, σ calibrated to the target ε) and once without privacy
   (fixed-size shuffled batches, no clipping or noise), with the same optimiser, warmup, expected
   batch size and number of steps; each run has its own learning rate.

Reported for the base model and both fine-tuned models: validation loss on held-out banking users
and tool-call exact match (greedy generation of the first tool call for held-out prompts;
function name and parsed arguments compared) and function-name match. The target: DP exact
match ≥ 90 % of the non-private one. ``--from-scratch`` skips stage 1 (both runs start from the
randomly initialised model, on all three domains): the harder setting in which the tiny model
must also learn to copy under noise.

    .venv/bin/python benchmarks/bench_utility.py     # ε = 8, δ = 1e-5; ~10 min + ~20 min, 2 cores
    .venv/bin/python benchmarks/bench_utility.py --private-seed 2   # same base, other private data
    .venv/bin/python benchmarks/bench_utility.py --baseline-lr 3e-3,5e-3,1e-2  # best baseline
    .venv/bin/python benchmarks/bench_utility.py --json
    python benchmarks/bench_utility.py --device cuda --precision bf16 --physical-batch 256  # GPU
    .venv/bin/python benchmarks/bench_utility.py --from-scratch --n 20000 --steps 300 \
        --batch-size 128 --warmup 30 --prompts 64
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import random
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from privacy_finetuner.config import JobConfig, load_config
from privacy_finetuner.training import run_job
from privacy_finetuner.training.evaluation import tool_call_scores, validation_loss
from privacy_finetuner.training.examples import example_overrides
from privacy_finetuner.training.prepare import PreparedData, prepare_data

PUBLIC_DOMAINS = ["support", "booking"]
PRIVATE_DOMAINS = ["banking"]
#: Every projection of the Llama blocks: the new tools change what the MLPs must produce too.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _data_section(n: int, seed: int, domains: list[str] | None, max_length: int) -> dict[str, Any]:
    return {
        "synthetic": {"n": n, "seed": seed, "domains": domains},
        "max_length": max_length,
        "validation_split": 0.1,
    }


def _training_section(
    args: argparse.Namespace, steps: int, lr: float, batch_size: int, seed: int
) -> dict[str, Any]:
    return {
        "max_steps": steps,
        "batch_size": batch_size,
        "learning_rate": lr,
        "warmup_steps": args.warmup,
        "seed": seed,
        "eval_every": max(1, steps // 4),
        "eval_batches": 2,
        "checkpoint_every": 100_000,
        "eval_tool_calls": args.prompts,
        "device": args.device,
        "precision": args.precision,
    }


def _config(
    args: argparse.Namespace,
    data: dict[str, Any],
    model: dict[str, Any],
    steps: int,
    lr: float,
    run_dir: Path | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
) -> JobConfig:
    output = {} if run_dir is None else {"output": {"dir": str(run_dir)}}
    return load_config(
        None,
        {
            "data": data,
            "guard": {"enabled": True, "strategy": "redact"},
            "model": model,
            "training": _training_section(
                args,
                steps,
                lr,
                batch_size or args.batch_size,
                _private_seed(args) if seed is None else seed,
            ),
            "privacy": {
                "target_epsilon": args.epsilon,
                "delta": args.delta,
                "max_grad_norm": args.clip,
                "max_physical_batch_size": args.physical_batch,
            },
            **output,
        },
    )


def _shuffled_batches(size: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Fixed-size batches of indices, reshuffled at every pass (the non-private baseline)."""
    rng = random.Random(seed)
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            order = list(range(size))
            rng.shuffle(order)
        batch, order = order[:batch_size], order[batch_size:]
        yield batch


def _non_private(
    prepared: PreparedData,
    config: JobConfig,
    steps: int,
    lr: float,
    *,
    label: str,
    show: bool,
    clip: float = 0.0,
) -> float:
    """Plain AdamW on fixed-size shuffled batches (mean token loss), with the DP run's warmup;
    returns seconds taken. A batch is processed in micro-batches of ``max_physical_batch_size``
    (faster on CPU); their losses are weighted by target tokens, so each step's gradient is
    exactly that of the mean token loss over the whole batch (checked: relative difference
    2.5e-7 between micro-batches of 32 and one of 256). ``clip`` > 0 clips that gradient's global
    norm, as a Hugging Face ``Trainer`` does by default: no per-example clipping, no noise."""
    import torch
    from rich.progress import Progress, TimeElapsedColumn

    from privacy_finetuner.data.collate import make_collate_fn
    from privacy_finetuner.data.tokenize import IGNORE_INDEX
    from privacy_finetuner.training.pipeline import resolve_device

    device = resolve_device(config.training.device, torch)
    bf16 = config.training.precision == "bf16"
    model = prepared.loaded.model.to(device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    collate = make_collate_fn(prepared.loaded.tokenizer.pad_token_id)
    training, micro = config.training, config.privacy.max_physical_batch_size
    batches = _shuffled_batches(len(prepared.train), training.batch_size, training.seed)
    started = time.perf_counter()
    progress = Progress(*Progress.get_default_columns(), TimeElapsedColumn(), disable=not show)
    with progress:
        task = progress.add_task(label, total=steps)
        for step, idx in zip(range(steps), batches, strict=False):
            warm = min(1.0, (step + 1) / training.warmup_steps) if training.warmup_steps else 1.0
            for group in optimizer.param_groups:
                group["lr"] = lr * warm
            examples = [prepared.train[i] for i in idx]
            total = sum(sum(1 for t in e.labels[1:] if t != IGNORE_INDEX) for e in examples)
            optimizer.zero_grad()
            for start in range(0, len(examples), micro):
                batch = {
                    k: v.to(device) for k, v in collate(examples[start : start + micro]).items()
                }
                targets = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = model(**batch).loss
                (loss.float() * (targets / total)).backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], clip)
            optimizer.step()
            progress.advance(task)
    return time.perf_counter() - started


def _non_private_sweep(
    prepared: PreparedData, config: JobConfig, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """One non-private run per ``--baseline-lr``, each from the same starting weights: DP is
    compared against the best of them, so a mistuned baseline cannot flatter it."""
    import copy

    model = prepared.loaded.model
    start = copy.deepcopy(model.state_dict())
    rows = []
    for lr in args.baseline_lr:
        model.load_state_dict(start)
        seconds = _non_private(
            prepared, config, args.steps, lr, label=f"non-private lr {lr:g}", show=not args.json,
            clip=args.baseline_clip,
        )  # fmt: skip
        rows.append({**_scores(prepared), "seconds": round(seconds, 1), "lr": lr})
    return rows


def _scores(prepared: PreparedData) -> dict[str, float]:
    """Validation loss, tool-call exact match and function-name match of ``prepared``'s model."""
    loaded = prepared.loaded
    loss = validation_loss(
        loaded.model, prepared.validation, pad_token_id=loaded.tokenizer.pad_token_id
    )
    scores = tool_call_scores(loaded.model, loaded.tokenizer, prepared.prompts) or {}
    return {
        "validation_loss": loss,
        "tool_call_exact_match": scores.get("exact_match", 0.0),
        "tool_name_match": scores.get("name_match", 0.0),
    }


def _base_model_section(args: argparse.Namespace) -> dict[str, Any]:
    """The example's tiny model; with ``--split-digits`` its tokenizer has one token per digit."""
    model: dict[str, Any] = example_overrides("support-agent")["model"]
    model["tiny"]["split_digits"] = args.split_digits
    return model


def _public_base(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """Stage 1: the tiny model pretrained without privacy on public (support + booking) traces,
    saved as a Hugging Face model directory; reused when the same settings made it before."""
    settings = {
        "n": args.public_n,
        "steps": args.public_steps,
        "lr": args.public_lr,
        "batch": args.public_batch_size,
        "seed": args.seed,
        "max_length": args.max_length,
        "domains": PUBLIC_DOMAINS,
        "model": _base_model_section(args),
        "version": 1,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    base_dir = Path(args.base_dir).expanduser() / f"public-base-{digest}"
    info_path = base_dir / "pretraining.json"
    if info_path.is_file():
        return base_dir, json.loads(info_path.read_text())
    data = _data_section(args.public_n, args.seed + 1, PUBLIC_DOMAINS, args.max_length)
    config = _config(
        args, data, settings["model"], args.public_steps, args.public_lr,
        batch_size=args.public_batch_size, seed=args.seed,
    )  # fmt: skip
    prepared = prepare_data(config)
    seconds = _non_private(
        prepared, config, args.public_steps, args.public_lr, label="public pretraining",
        show=not args.json,
    )  # fmt: skip
    info = {**settings, "seconds": round(seconds, 1), "public_validation": _scores(prepared)}
    base_dir.mkdir(parents=True, exist_ok=True)
    prepared.loaded.model.save_pretrained(base_dir, safe_serialization=True)
    prepared.loaded.tokenizer.save_pretrained(base_dir)
    info_path.write_text(json.dumps(info, indent=2))  # last: marks the directory complete
    return base_dir, info


def _private_seed(args: argparse.Namespace) -> int:
    """Seed of the private data, split and training (``--private-seed``, else ``--seed``)."""
    return int(args.seed if args.private_seed is None else args.private_seed)


def _private_setting(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """The private data and the model the two fine-tuning runs start from."""
    if args.from_scratch:
        data = _data_section(args.n, _private_seed(args), None, args.max_length)
        return data, example_overrides("support-agent")["model"], None
    if _private_seed(args) == args.seed + 1:
        raise SystemExit("--private-seed must differ from --seed + 1, the public data's seed")
    base_dir, pretraining = _public_base(args)
    data = _data_section(args.n, _private_seed(args), PRIVATE_DOMAINS, args.max_length)
    model: dict[str, Any] = {"name": str(base_dir), "finetuning": args.finetuning}
    if args.finetuning == "lora":
        model["lora"] = {
            "r": args.lora_r,
            "alpha": 2.0 * args.lora_r,
            "target_modules": LORA_TARGETS,
        }
    return data, model, pretraining


def _quiet() -> None:
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def _learning_rates(text: str) -> list[float]:
    """``1e-2`` or ``3e-3,1e-2``: positive learning rates."""
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma list of numbers: {text!r}") from exc
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError(f"learning rates must be positive: {text!r}")
    return rates


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add = parser.add_argument
    add("--n", type=int, default=40_000, help="private (banking) traces")
    add("--steps", type=int, default=300, help="fine-tuning steps (both runs)")
    add("--batch-size", type=int, default=256, help="expected batch size of fine-tuning")
    add("--lr", type=float, default=1e-2, help="learning rate of the DP run")
    add("--baseline-lr", type=_learning_rates, default=[1e-2],
        help="learning rate(s) of the non-private run; a comma list runs each from the same "
        "start and compares DP against the best")  # fmt: skip
    add("--baseline-clip", type=float, default=0.0,
        help="global gradient-norm clipping of the non-private run (0: none; HF Trainer uses 1)")  # fmt: skip
    add("--warmup", type=int, default=15, help="linear warmup steps (every stage)")
    add("--finetuning", choices=["full", "lora"], default="full")
    add("--lora-r", type=int, default=8)
    add("--clip", type=float, default=1.0)
    add("--epsilon", type=float, default=8.0)
    add("--delta", type=float, default=1e-5)
    add("--max-length", type=int, default=256)
    add("--seed", type=int, default=0, help="seed of every stage")
    add("--private-seed", type=int, help="another seed for the private stage only (same base)")
    add("--prompts", type=int, default=200, help="held-out tool-call prompts scored")
    add("--physical-batch", type=int, default=32, help="micro-batch size (speed only)")
    add("--device", default="auto", help="auto (CUDA when available), cpu, cuda[:N]")
    add("--precision", choices=["fp32", "bf16"], default="fp32",
        help="bf16: forward passes under autocast, both runs (GPUs)")  # fmt: skip
    add("--public-n", type=int, default=20_000, help="public (support + booking) traces")
    add("--public-steps", type=int, default=400, help="public pretraining steps")
    add("--public-lr", type=float, default=1e-2)
    add("--public-batch-size", type=int, default=128)
    add("--split-digits", action=argparse.BooleanOptionalAction, default=True,
        help="base tokenizer with one token per digit")  # fmt: skip
    add("--base-dir", default="~/.cache/privacy-finetuner/bench", help="cache of public bases")
    add("--from-scratch", action="store_true", help="no public pretraining (all domains)")
    add("--json", action="store_true", help="print one JSON object")
    return parser


def _hardware(args: argparse.Namespace) -> str:
    """The device both runs trained on, named as a reader can look it up."""
    import torch

    from privacy_finetuner.training.pipeline import resolve_device

    device = resolve_device(args.device, torch)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads)"


def _print_table(summary: dict[str, Any]) -> None:
    s = summary
    print(f"\nHardware: {s['hardware']}, precision {s['precision']}")
    clip = (
        f", global norm clip {s['non_private_global_clip']:g}"
        if s["non_private_global_clip"]
        else ""
    )
    print(f"\nUtility at ε = {s['epsilon']:.3f} (target {s['target_epsilon']}), "
          f"δ = {s['delta']:g}, σ = {s['noise_multiplier']:.3f}, q = {s['sample_rate']:.4f}, "
          f"{s['steps']} steps, expected batch {s['batch_size']}, "
          f"{s['train_examples']} private training traces, {s['finetuning']} fine-tuning, "
          f"lr {s['learning_rate']['dp']:g} (DP) / {s['learning_rate']['non_private']:g} "
          f"(non-private{clip}), warmup {s['warmup_steps']}")  # fmt: skip
    if s["public_pretraining"]:
        p = s["public_pretraining"]
        print(f"base: tiny model pretrained without privacy on {p['n']} public {'+'.join(p['domains'])} "
              f"traces for {p['steps']} steps (lr {p['lr']:g}, {p['seconds']:.0f} s when made)")  # fmt: skip
    print(f"{'model':<22}{'val loss':>10}{'tool-call EM':>14}{'function name':>15}{'train s':>9}")
    rows = [("base", s["base"])]
    sweep = s["non_private_sweep"] or [s["non_private"]]
    rows += [(f"non-private lr {r['lr']:g}" + (" *" if len(sweep) > 1 and r is s["non_private"]
              else ""), r) for r in sweep]  # fmt: skip
    rows.append((f"DP lr {s['learning_rate']['dp']:g}", s["dp"]))
    for label, row in rows:
        if row is None:
            continue
        seconds = f"{row['seconds']:>9.0f}" if "seconds" in row else f"{'':>9}"
        print(f"{label:<22}{row['validation_loss']:>10.4f}{row['tool_call_exact_match']:>14.3f}"
              f"{row['tool_name_match']:>15.3f}{seconds}")  # fmt: skip
    if len(sweep) > 1:
        print("* the best non-private run, which DP is compared against")
    print(
        f"DP / non-private exact match: {s['exact_match_ratio']:.3f} (target ≥ 0.90: "
        f"{'met' if s['meets_target'] else 'NOT met'}); {s['tool_call_prompts']} held-out prompts"
    )


def main() -> None:
    args = _parser().parse_args()
    _quiet()
    data, model, pretraining = _private_setting(args)
    with tempfile.TemporaryDirectory() as tmp:
        config = _config(args, data, model, args.steps, args.lr, Path(tmp) / "dp")
        started = time.perf_counter()
        result = run_job(config, Path(tmp) / "dp", progress=not args.json)
        dp_seconds = time.perf_counter() - started
        # Exact held-out metrics and timings: internal diagnostics, not in privacy_report.json.
        internal = json.loads((Path(tmp) / "dp" / "internal_diagnostics.json").read_text())
    dp_final = result.metrics

    # Same seed: same data, split, guard and tokenizer, and the same starting weights.
    baseline_config = _config(args, data, model, args.steps, args.baseline_lr[0])
    prepared = prepare_data(baseline_config)
    if prepared.loaded.method == "lora":
        from privacy_finetuner.modeling.loading import apply_finetuning

        prepared.loaded = apply_finetuning(prepared.loaded, baseline_config.model.lora)
    base = None if args.from_scratch else _scores(prepared)
    sweep = _non_private_sweep(prepared, baseline_config, args)
    non_private = max(sweep, key=lambda r: (r["tool_call_exact_match"], -r["validation_loss"]))

    dp = {
        "validation_loss": dp_final["loss"],
        "tool_call_exact_match": dp_final["tool_call_exact_match"] or 0.0,
        "tool_name_match": dp_final.get("tool_call_name_match") or 0.0,
        "seconds": internal["timing"]["train_seconds"],  # the training loop, as for non-private
        "job_seconds": round(dp_seconds, 1),  # + data, guard, evaluation, report
    }
    non_private_em = non_private["tool_call_exact_match"]
    ratio = dp["tool_call_exact_match"] / non_private_em if non_private_em else math.nan
    summary: dict[str, Any] = {
        "epsilon": result.epsilon,
        "target_epsilon": args.epsilon,
        "delta": args.delta,
        "noise_multiplier": result.noise_multiplier,
        "sample_rate": result.sample_rate,
        "steps": result.steps,
        "batch_size": args.batch_size,
        "finetuning": "full (from scratch)" if args.from_scratch else args.finetuning,
        "learning_rate": {"dp": args.lr, "non_private": non_private["lr"]},
        "non_private_global_clip": args.baseline_clip or None,
        "warmup_steps": args.warmup,
        "train_examples": len(prepared.train),
        "tool_call_prompts": len(prepared.prompts),
        "public_pretraining": pretraining,
        "base": base,
        "dp": dp,
        "non_private": non_private,
        "non_private_sweep": sweep if len(sweep) > 1 else None,
        "exact_match_ratio": ratio,
        "target_ratio": 0.9,
        "meets_target": bool(ratio >= 0.9) if math.isfinite(ratio) else False,
        "hardware": _hardware(args),
        "precision": args.precision,
    }
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        _print_table(summary)


if __name__ == "__main__":
    main()
