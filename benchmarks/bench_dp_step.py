"""Benchmark one DP-SGD step: non-private vs privacy_finetuner vs Opacus 1.6 (hooks, ghost).

Each (workload, mode) runs in its own subprocess so its peak RSS is its own; rounds interleave
the modes so that load from other processes on a shared machine hits all modes alike; the
reported time is the median over rounds of each subprocess's median step time.

Workloads (see ``WORKLOADS``): (a) Llama-style, 4 layers, hidden 256, vocab 8192, seq 128,
batch 16, full fine-tuning; (b) (a) with LoRA r=8 on q/v; (c) GPT-2-style, 4 layers, n_embd 256,
full; (d) (a) with seq 512, batch 8. GPU-sized (``--device cuda``): (e) Llama-style, 8 layers,
hidden 1024, vocab 32000, seq 512, batch 16, full; (f) (e) with LoRA r=8 on q/v.

Usage:
    python benchmarks/bench_dp_step.py [--steps 5] [--rounds 3] [--workloads a,b,c,d]
        [--modes nonprivate,ours,opacus_hooks,opacus_ghost] [--quick] [--json]
    python benchmarks/bench_dp_step.py --device cuda --precision bf16 --workloads a,e,f

On CUDA each step is synchronised before the clock stops, and the memory column is the peak GPU
memory allocated by PyTorch (``torch.cuda.max_memory_allocated``) instead of the process's RSS.

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
    "e": {"arch": "llama", "seq": 512, "batch": 16, "lora": False, "hidden": 1024, "layers": 8,
          "vocab": 32000},
    "f": {"arch": "llama", "seq": 512, "batch": 16, "lora": True, "hidden": 1024, "layers": 8,
          "vocab": 32000},
}  # fmt: skip
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
    peak_gpu_mb: float | None = None


# ----------------------------------------------------------------------------- worker side
def _model(spec: dict[str, Any]) -> Any:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    hidden, layers, vocab = _size(spec)
    heads = max(HEADS, hidden // 64)
    if spec["arch"] == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=4 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=512,
            tie_word_embeddings=False,
        )
        model = LlamaForCausalLM(cfg)
    else:
        cfg = GPT2Config(
            vocab_size=vocab,
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
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


def _size(spec: dict[str, Any]) -> tuple[int, int, int]:
    """Hidden size, layers and vocabulary of a workload (the CPU-sized defaults unless given)."""
    return spec.get("hidden", HIDDEN), spec.get("layers", LAYERS), spec.get("vocab", VOCAB)


def _batch(spec: dict[str, Any], device: Any) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, _size(spec)[2], (spec["batch"], spec["seq"]), generator=g).to(device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def _per_example_loss(model: Any, batch: dict[str, Any]) -> Any:
    from privacy_finetuner.engine import causal_lm_loss

    return causal_lm_loss(model, batch)


def _loader(batch: dict[str, Any]) -> Any:
    from torch.utils.data import DataLoader, TensorDataset

    n = batch["input_ids"].shape[0]
    data = TensorDataset(batch["input_ids"].cpu().repeat(8, 1))
    return DataLoader(data, batch_size=n)  # q = 1/8, only used for the noise scale


def _step_fn(mode: str, model: Any, batch: dict[str, Any], bf16: bool) -> Any:
    """One optimiser step of ``mode``; with ``bf16`` every mode's forward runs under bf16 autocast
    (ours through the engine's own ``autocast_dtype``, which keeps norms and noise in fp32)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4)
    device_type = batch["input_ids"].device.type

    def autocast() -> Any:
        return torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16)

    if mode == "nonprivate":

        def step() -> None:
            with autocast():
                loss = _per_example_loss(model, batch).mean()
            loss.backward()
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
            autocast_dtype=torch.bfloat16 if bf16 else None,
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
            with autocast():
                loss = _per_example_loss(gsm, batch).mean()
            loss.backward()
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
        with autocast():
            per_example = _per_example_loss(gsm, batch)
        loss = DPTensorFastGradientClipping(gsm, dp_opt, per_example, "mean")
        loss.backward()
        dp_opt.step()
        dp_opt.zero_grad(set_to_none=True)

    return step_ghost


def worker(
    workload: str, mode: str, steps: int, warmup: int, device_name: str = "cpu", bf16: bool = False
) -> dict[str, Any]:
    """Time ``steps`` steps of one mode after ``warmup`` steps; report median and peak memory."""
    import torch

    warnings.simplefilter("ignore")
    device = torch.device(device_name)
    cuda = device.type == "cuda"
    spec = WORKLOADS[workload]
    model, batch = _model(spec).to(device), _batch(spec, device)
    step = _step_fn(mode, model, batch, bf16)
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times, cpu = [], []
    for _ in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        if cuda:
            torch.cuda.synchronize(device)  # the step's kernels, not only their launch
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "seconds": statistics.median(times),
        "cpu_seconds": statistics.median(cpu),
        "all": times,
        "peak_rss_mb": peak_kb / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
    }


# ----------------------------------------------------------------------------- driver side
def _run_one(
    workload: str, mode: str, steps: int, warmup: int, device: str, precision: str
) -> Result:
    spec = WORKLOADS[workload]
    tokens = spec["seq"] * spec["batch"]
    cmd = [sys.executable, __file__, "--worker", workload, mode, str(steps), str(warmup)]
    cmd += ["--device", device, "--precision", precision]
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
        workload,
        mode,
        data["seconds"],
        data["peak_rss_mb"],
        tokens,
        None,
        data["cpu_seconds"],
        data.get("peak_gpu_mb"),
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
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the workers
    if args.worker:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        workload, mode, steps, warmup = args.worker
        bf16 = args.precision == "bf16"
        print(json.dumps(worker(workload, mode, int(steps), int(warmup), args.device, bf16)))
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
                res = _run_one(w, m, args.steps, args.warmup, args.device, args.precision)
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


def _memory(result: Result) -> float | None:
    """Peak GPU memory on CUDA (what limits the batch there), else the process's peak RSS."""
    return result.peak_gpu_mb if result.peak_gpu_mb is not None else result.peak_rss_mb


def _summarise(
    runs: dict[tuple[str, str], list[Result]], workloads: list[str], modes: list[str]
) -> list[dict[str, Any]]:
    rows = []
    for w in workloads:
        base = [r.seconds for r in runs.get((w, "nonprivate"), []) if r.seconds]
        base_rss = [_memory(r) for r in runs.get((w, "nonprivate"), []) if _memory(r)]
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
            rss = statistics.median(m for m in map(_memory, ok) if m)
            cpu = statistics.median(r.cpu_seconds for r in ok if r.cpu_seconds)
            rows.append(
                {
                    "workload": w,
                    "mode": m,
                    "s_per_step": sec,
                    "ratio": sec / t0 if t0 else None,
                    "tokens_per_s": ok[0].tokens / sec,
                    "peak_mb": rss,
                    "memory": "gpu" if ok[0].peak_gpu_mb is not None else "rss",
                    "mem_ratio": rss / m0 if m0 else None,
                    "runs": [r.seconds for r in ok],
                    "cpu_s_per_step": cpu,
                    "cpu_ratio": cpu / c0 if c0 else None,
                }
            )
    return rows


def _print_table(rows: list[dict[str, Any]]) -> None:
    gpu = any(r.get("memory") == "gpu" for r in rows)
    memory = "peak GPU MB" if gpu else "peak RSS MB"
    head = (
        f"{'wl':<3}{'mode':<14}{'s/step':>9}{'x nonpriv':>10}{'tok/s':>9}"
        f"{'cpu s/step':>11}{'x cpu':>7}{memory:>12}{'x mem':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['workload']:<3}{r['mode']:<14}  n/a: {r['error']}")
            continue
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "-"
        rss_ratio = f"{r['mem_ratio']:.2f}" if r["mem_ratio"] else "-"
        cpu_ratio = f"{r['cpu_ratio']:.2f}" if r["cpu_ratio"] else "-"
        print(
            f"{r['workload']:<3}{r['mode']:<14}{r['s_per_step']:>9.3f}{ratio:>10}"
            f"{r['tokens_per_s']:>9.0f}{r['cpu_s_per_step']:>11.3f}{cpu_ratio:>7}"
            f"{r['peak_mb']:>12.0f}{rss_ratio:>7}"
        )


if __name__ == "__main__":
    sys.exit(main())
