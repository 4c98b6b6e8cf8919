"""Benchmark one DP-SGD step: non-private vs privacy_finetuner vs Opacus 1.6 (hooks, ghost).

Each (workload, mode) runs in its own subprocess so its peak RSS is its own; rounds interleave
the modes so that load from other processes on a shared machine hits all modes alike; the
reported time is the median over rounds of each subprocess's median step time.

Workloads (see ``WORKLOADS``): (a) Llama-style, 4 layers, hidden 256, vocab 8192, seq 128,
batch 16, full fine-tuning; (b) (a) with LoRA r=8 on q/v; (c) GPT-2-style, 4 layers, n_embd 256,
full; (d) (a) with seq 512, batch 8.

Usage:
    python benchmarks/bench_dp_step.py [--steps 5] [--rounds 3] [--workloads a,b,c,d]
        [--modes nonprivate,ours,opacus_hooks,opacus_ghost] [--quick] [--json]

Opacus is a benchmark-only extra (``pip install 'opacus==1.6.*'``); without it its columns are
skipped with the reason printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

WORKLOADS: dict[str, dict[str, Any]] = {
    "a": {"arch": "llama", "seq": 128, "batch": 16, "lora": False},
    "b": {"arch": "llama", "seq": 128, "batch": 16, "lora": True},
    "c": {"arch": "gpt2", "seq": 128, "batch": 16, "lora": False},
    "d": {"arch": "llama", "seq": 512, "batch": 8, "lora": False},
}
MODES = ["nonprivate", "ours", "opacus_hooks", "opacus_ghost"]
HIDDEN, LAYERS, VOCAB, HEADS = 256, 4, 8192, 4


@dataclass
class Result:
    workload: str
    mode: str
    seconds: float | None
    peak_rss_mb: float | None
    tokens: int
    error: str | None = None
    cpu_seconds: float | None = None


# ----------------------------------------------------------------------------- worker side
def _model(spec: dict[str, Any]) -> Any:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if spec["arch"] == "llama":
        cfg = LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            intermediate_size=4 * HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            num_key_value_heads=HEADS,
            max_position_embeddings=512,
            tie_word_embeddings=False,
        )
        model = LlamaForCausalLM(cfg)
    else:
        cfg = GPT2Config(
            vocab_size=VOCAB,
            n_embd=HIDDEN,
            n_layer=LAYERS,
            n_head=HEADS,
            n_positions=512,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
        model = GPT2LMHeadModel(cfg)
    if spec["lora"]:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
        )
    model.config.use_cache = False
    return model.train()


def _batch(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (spec["batch"], spec["seq"]), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def _per_example_loss(model: Any, batch: dict[str, Any]) -> Any:
    from privacy_finetuner.engine import causal_lm_loss

    return causal_lm_loss(model, batch)


def _loader(batch: dict[str, Any]) -> Any:
    from torch.utils.data import DataLoader, TensorDataset

    n = batch["input_ids"].shape[0]
    data = TensorDataset(batch["input_ids"].repeat(8, 1))
    return DataLoader(data, batch_size=n)  # q = 1/8, only used for the noise scale


def _step_fn(mode: str, model: Any, batch: dict[str, Any]) -> Any:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4)
    if mode == "nonprivate":

        def step() -> None:
            _per_example_loss(model, batch).mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step
    if mode == "ours":
        from privacy_finetuner.engine import PrivacyEngine

        engine = PrivacyEngine(seed=0)
        engine.make_private(
            module=model,
            optimizer=opt,
            data_loader=_loader(batch),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            max_physical_batch_size=batch["input_ids"].shape[0],
        )
        return lambda: engine.step(batch)
    from opacus import PrivacyEngine as OpacusEngine

    opacus = OpacusEngine()
    if mode == "opacus_hooks":
        gsm, dp_opt, _ = opacus.make_private(
            module=model,
            optimizer=opt,
            data_loader=_loader(batch),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            poisson_sampling=False,
            grad_sample_mode="hooks",
        )

        def step_hooks() -> None:
            _per_example_loss(gsm, batch).mean().backward()
            dp_opt.step()
            dp_opt.zero_grad(set_to_none=True)

        return step_hooks
    from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping

    gsm, dp_opt, _, _ = opacus.make_private(
        module=model,
        optimizer=opt,
        data_loader=_loader(batch),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        poisson_sampling=False,
        grad_sample_mode="ghost",
        criterion=torch.nn.CrossEntropyLoss(),
    )

    def step_ghost() -> None:  # loss given per sample, two backward passes inside
        loss = DPTensorFastGradientClipping(gsm, dp_opt, _per_example_loss(gsm, batch), "mean")
        loss.backward()
        dp_opt.step()
        dp_opt.zero_grad(set_to_none=True)

    return step_ghost


def worker(workload: str, mode: str, steps: int, warmup: int) -> dict[str, Any]:
    """Time ``steps`` steps of one mode after ``warmup`` steps; report median and peak RSS."""
    warnings.simplefilter("ignore")
    spec = WORKLOADS[workload]
    model, batch = _model(spec), _batch(spec)
    step = _step_fn(mode, model, batch)
    for _ in range(warmup):
        step()
    times, cpu = [], []
    for _ in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "seconds": statistics.median(times),
        "cpu_seconds": statistics.median(cpu),
        "all": times,
        "peak_rss_mb": peak_kb / 1024,
    }


# ----------------------------------------------------------------------------- driver side
def _run_one(workload: str, mode: str, steps: int, warmup: int) -> Result:
    spec = WORKLOADS[workload]
    tokens = spec["seq"] * spec["batch"]
    cmd = [sys.executable, __file__, "--worker", workload, mode, str(steps), str(warmup)]
    if os.environ.get("OMP_NUM_THREADS"):
        cmd += ["--threads", os.environ["OMP_NUM_THREADS"]]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return Result(workload, mode, None, None, tokens, error=tail[:200])
    data = json.loads(lines[-1])
    return Result(
        workload, mode, data["seconds"], data["peak_rss_mb"], tokens, None, data["cpu_seconds"]
    )


def _opacus_missing() -> str | None:
    try:
        import opacus  # noqa: F401
    except ImportError as exc:
        return f"opacus not installed ({exc}); pip install 'opacus==1.6.*' for its columns"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per subprocess")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats per mode")
    parser.add_argument("--workloads", default="a,b,c,d")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--quick", action="store_true", help="1 round, 2 steps, 1 warm-up")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads per worker (0: torch's default)"
    )
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the workers
    if args.worker:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        workload, mode, steps, warmup = args.worker
        print(json.dumps(worker(workload, mode, int(steps), int(warmup))))
        return 0
    if args.quick:
        args.rounds, args.steps, args.warmup = 1, 2, 1
    modes = args.modes.split(",")
    missing = _opacus_missing()
    if missing and any(m.startswith("opacus") for m in modes):
        print(f"skipping Opacus modes: {missing}", file=sys.stderr)
        modes = [m for m in modes if not m.startswith("opacus")]
    workloads = args.workloads.split(",")
    runs: dict[tuple[str, str], list[Result]] = {}
    for r in range(args.rounds):
        for w in workloads:
            order = modes[r % len(modes) :] + modes[: r % len(modes)]  # rotate who goes first
            for m in order:
                res = _run_one(w, m, args.steps, args.warmup)
                runs.setdefault((w, m), []).append(res)
                print(
                    f"round {r + 1} {w} {m}: {res.seconds if res.seconds else res.error}",
                    file=sys.stderr,
                )
    rows = _summarise(runs, workloads, modes)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
    return 0


def _summarise(
    runs: dict[tuple[str, str], list[Result]], workloads: list[str], modes: list[str]
) -> list[dict[str, Any]]:
    rows = []
    for w in workloads:
        base = [r.seconds for r in runs.get((w, "nonprivate"), []) if r.seconds]
        base_rss = [r.peak_rss_mb for r in runs.get((w, "nonprivate"), []) if r.peak_rss_mb]
        t0 = statistics.median(base) if base else None
        base_cpu = [r.cpu_seconds for r in runs.get((w, "nonprivate"), []) if r.cpu_seconds]
        c0 = statistics.median(base_cpu) if base_cpu else None
        m0 = statistics.median(base_rss) if base_rss else None
        for m in modes:
            res = runs.get((w, m), [])
            ok = [r for r in res if r.seconds]
            if not ok:
                rows.append({"workload": w, "mode": m, "error": res[0].error if res else "not run"})
                continue
            sec = statistics.median(r.seconds for r in ok if r.seconds)
            rss = statistics.median(r.peak_rss_mb for r in ok if r.peak_rss_mb)
            cpu = statistics.median(r.cpu_seconds for r in ok if r.cpu_seconds)
            rows.append(
                {
                    "workload": w,
                    "mode": m,
                    "s_per_step": sec,
                    "ratio": sec / t0 if t0 else None,
                    "tokens_per_s": ok[0].tokens / sec,
                    "peak_rss_mb": rss,
                    "rss_ratio": rss / m0 if m0 else None,
                    "runs": [r.seconds for r in ok],
                    "cpu_s_per_step": cpu,
                    "cpu_ratio": cpu / c0 if c0 else None,
                }
            )
    return rows


def _print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'wl':<3}{'mode':<14}{'s/step':>9}{'x nonpriv':>10}{'tok/s':>9}"
        f"{'cpu s/step':>11}{'x cpu':>7}{'peak RSS MB':>12}{'x RSS':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['workload']:<3}{r['mode']:<14}  n/a: {r['error']}")
            continue
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "-"
        rss_ratio = f"{r['rss_ratio']:.2f}" if r["rss_ratio"] else "-"
        cpu_ratio = f"{r['cpu_ratio']:.2f}" if r["cpu_ratio"] else "-"
        print(
            f"{r['workload']:<3}{r['mode']:<14}{r['s_per_step']:>9.3f}{ratio:>10}"
            f"{r['tokens_per_s']:>9.0f}{r['cpu_s_per_step']:>11.3f}{cpu_ratio:>7}"
            f"{r['peak_rss_mb']:>12.0f}{rss_ratio:>7}"
        )


if __name__ == "__main__":
    sys.exit(main())
