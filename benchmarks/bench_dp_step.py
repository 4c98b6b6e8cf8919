"""Benchmark one DP-SGD step: non-private vs privacy_finetuner vs Opacus 1.6 (hooks, ghost).

Each (workload, mode) runs in its own subprocess so its peak RSS is its own; rounds interleave
the modes so that load from other processes on a shared machine hits all modes alike; the
reported time is the median over rounds of each subprocess's median step time.

Workloads (see ``WORKLOADS``): (a) Llama-style, 4 layers, hidden 256, vocab 8192, seq 128,
batch 16, full fine-tuning; (b) (a) with LoRA r=8 on q/v; (c) GPT-2-style, 4 layers, n_embd 256,
full; (d) (a) with seq 512, batch 8. GPU-sized (``--device cuda``): (e) Llama-style, 8 layers,
hidden 1024, vocab 32000, seq 512, batch 16, full; (f) (e) with LoRA r=8 on q/v.

Workload (g), ``--workloads g`` (run on its own, in this process): Llama-3.2-1B shapes (hidden
2048, MLP 8192, 32/8 heads of 64, vocab 128256, tied embeddings) with random weights at reduced
depth (``--g-layers``; each layer's cost is exact), full and LoRA (r = 16, all linear layers),
under bf16 autocast. Non-private and the engine run on the SAME model, alternating in one process,
so both see the same load: FLOPs (``torch.utils.flop_counter.FlopCounterMode``), aten op count
(a kernel-launch proxy), host-sync ops, peak RSS during the step (sampled) and median time.
The FLOPs of forward + backward + clipping at the full size (``--g-count-seq``/``--g-count-batch``,
default T = 1024, batch 8) are also counted on the ``meta`` device (shapes only, no compute).

Usage:
    python benchmarks/bench_dp_step.py [--steps 5] [--rounds 3] [--workloads a,b,c,d]
        [--modes nonprivate,ours,opacus_hooks,opacus_ghost] [--quick] [--json]
    python benchmarks/bench_dp_step.py --device cuda --precision bf16 --workloads a,e,f
    python benchmarks/bench_dp_step.py --workloads g [--g-layers 1 --g-seq 256 --g-batch 1]

On CUDA each step is synchronised before the clock stops, and the memory column is the peak GPU
memory allocated by PyTorch (``torch.cuda.max_memory_allocated``) instead of the process's RSS.

Opacus is a benchmark-only extra (``pip install 'opacus==1.6.*'``); without it its columns are
skipped with the reason printed.
"""

from __future__ import annotations

import argparse
import json
import logging
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

        def step_ours() -> Any:
            return engine.step(batch)

        step_ours.engine = engine  # type: ignore[attr-defined]  # (g) toggles σ on it
        return step_ours
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


# ----------------------------------------------------------------------------- workload (g)
G_SHAPES = {"hidden": 2048, "intermediate": 8192, "heads": 32, "kv_heads": 8, "vocab": 128256}
G_MODES = ("nonprivate", "ours", "ours_sigma0")  # the engine with σ = 0: clipping without noise
G_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_SYNC_OPS = ("_local_scalar_dense", "nonzero", "unique", "masked_select", "item")


def _g_model(layers: int, lora: bool, device: str = "cpu") -> Any:
    """Llama-3.2-1B-shaped model with random weights; built on ``device`` without HF's slow init."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=G_SHAPES["vocab"],
        hidden_size=G_SHAPES["hidden"],
        intermediate_size=G_SHAPES["intermediate"],
        num_hidden_layers=layers,
        num_attention_heads=G_SHAPES["heads"],
        num_key_value_heads=G_SHAPES["kv_heads"],
        head_dim=G_SHAPES["hidden"] // G_SHAPES["heads"],
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    model.tie_weights()
    if device != "meta":
        model = model.to_empty(device=device)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
            for name, buf in model.named_buffers():
                if "inv_freq" in name:  # rotary frequencies were never computed on meta
                    half = torch.arange(0, buf.numel(), dtype=torch.float32)
                    theta = float(getattr(cfg, "rope_theta", None) or 10000.0)
                    buf.copy_(1.0 / (theta ** (half / buf.numel())))
        model.tie_weights()  # to_empty gave the head its own tensor: share the embedding again
    if model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
        raise RuntimeError("(g) needs tied embeddings")
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(r=16, lora_alpha=32, target_modules=G_LORA_TARGETS, lora_dropout=0.0),
        )
    model.config.use_cache = False
    return model.train()


class _OpCounter:
    """aten ops (a kernel-launch proxy) and host-sync ops of a region (TorchDispatchMode)."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class Mode(TorchDispatchMode):  # type: ignore[no-untyped-call]
            def __torch_dispatch__(
                self, func: Any, types: Any, args: Any = (), kwargs: Any = None
            ) -> Any:
                name = func.__name__
                if not (func.is_view or name.startswith(("detach", "alias", "_unsafe_view"))):
                    counter.ops += 1  # views and aliases launch no kernel
                if any(s in name for s in _SYNC_OPS):
                    counter.syncs += 1
                return func(*args, **(kwargs or {}))

        self.ops = 0
        self.syncs = 0
        self.mode = Mode()  # type: ignore[no-untyped-call]


class _PeakRss:
    """Peak resident set size while a region runs, sampled every 2 ms by a thread."""

    def __init__(self) -> None:
        import threading

        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.002)

    def __enter__(self) -> _PeakRss:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def _g_meta_flops(layers: int, lora: bool, seq: int, batch: int, budget_mb: float) -> list[float]:
    """FLOPs of forward + backward (+ the engine's clipping) at full size, on meta tensors."""
    from unittest import mock

    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import masking_utils

    from privacy_finetuner.engine import GradClipper, causal_lm_loss

    # HF looks at position ids on the host to detect packed sequences; on meta there are none.
    no_packing = mock.patch.object(masking_utils, "find_packed_sequence_indices", lambda *_: None)
    ids = torch.zeros(batch, seq, dtype=torch.long, device="meta")
    data = {"input_ids": ids, "labels": ids.clone()}  # no mask: HF checks it on the host
    out = []
    for private in (False, True):
        model = _g_model(layers, lora, device="meta")
        counter = FlopCounterMode(display=False)
        clipper = None
        if private:
            clipper = GradClipper(model, max_grad_norm=1.0, materialize_budget_mb=budget_mb)
            clipper.reset()
            clipper.begin(batch)
        with counter, no_packing:
            loss = causal_lm_loss(model, data)
            loss.sum().backward()  # type: ignore[no-untyped-call]
            if clipper is not None:
                clipper.end()
                clipper.clip_and_accumulate(None, batch)
        out.append(float(counter.get_total_flops()))
    return out


def run_g(args: argparse.Namespace) -> int:
    """Workload (g): non-private vs the engine on one model in one process (see module doc)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    missing = _opacus_missing()
    print(f"opacus: {missing or 'installed, not run: Opacus ghost refuses tied weights'}")
    variants = [v for v in args.g_variants.split(",") if v]
    rows: list[dict[str, Any]] = []
    for variant in variants:
        lora = variant == "lora"
        for budget in (256.0, 32768.0) if args.g_meta else ():
            np_f, dp_f = _g_meta_flops(
                args.g_count_layers, lora, args.g_count_seq, args.g_count_batch, budget
            )
            print(
                f"(g) {variant}: meta FLOPs fwd+bwd(+clip), {args.g_count_layers} layers, "
                f"T={args.g_count_seq}, "
                f"B={args.g_count_batch}, budget {budget:.0f} MiB: private/non-private = "
                f"{dp_f / np_f:.3f} ({dp_f / 1e12:.2f} / {np_f / 1e12:.2f} TFLOP)"
            )
        if args.g_meta == 2:
            continue
        model = _g_model(args.g_layers, lora, device=args.device)
        spec = {"batch": args.g_batch, "seq": args.g_seq, "vocab": G_SHAPES["vocab"]}
        batch = _batch(spec, args.device)
        steps = {m: _step_fn(m, model, batch, True) for m in ("ours", "nonprivate")}
        engine = steps["ours"].engine  # type: ignore[attr-defined]

        def no_noise(engine: Any = engine, batch: dict[str, Any] = batch) -> None:
            sigma, engine.noise_multiplier = engine.noise_multiplier, 0.0
            try:
                engine.step(batch)
            finally:
                engine.noise_multiplier = sigma

        steps["ours_sigma0"] = no_noise
        stats: dict[str, dict[str, Any]] = {m: {"times": []} for m in steps}
        for mode, step in steps.items():  # first step: counted (and a warm-up)
            ops = _OpCounter()
            flops = FlopCounterMode(display=False)
            with _PeakRss() as rss, flops, ops.mode:
                step()
            stats[mode].update(
                flops=float(flops.get_total_flops()), ops=ops.ops, syncs=ops.syncs, rss=rss.peak
            )
        for _ in range(args.g_rounds):
            for mode in G_MODES:
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                with _PeakRss() as rss:
                    start = time.perf_counter()
                    steps[mode]()
                    if cuda:
                        torch.cuda.synchronize()
                    stats[mode]["times"].append(time.perf_counter() - start)
                peak = torch.cuda.max_memory_allocated() if cuda else rss.peak
                stats[mode]["rss"] = max(0 if cuda else stats[mode]["rss"], peak)
        base = stats["nonprivate"]
        for mode in G_MODES:
            st = stats[mode]
            sec = statistics.median(st["times"])
            rows.append(
                {
                    "variant": variant,
                    "mode": mode,
                    "s_per_step": sec,
                    "time_x": sec / statistics.median(base["times"]),
                    "flops_x": st["flops"] / base["flops"],
                    "ops": st["ops"],
                    "ops_x": st["ops"] / base["ops"],
                    "syncs": st["syncs"],
                    "peak_rss_mb": st["rss"] / 2**20,
                    "mem_x": st["rss"] / base["rss"],
                    "times": st["times"],
                }
            )
        del model, steps
    head = (
        f"{'(g)':<6}{'mode':<12}{'s/step':>8}{'x time':>8}{'x FLOPs':>9}{'ops':>7}{'x ops':>7}"
        f"{'syncs':>6}{'peak MB':>13}{'x mem':>7}"
    )
    print(
        f"(g) Llama-3.2-1B shapes, {args.g_layers} layer(s), T={args.g_seq}, "
        f"batch {args.g_batch}, bf16 autocast, {args.device}, {args.g_rounds} timed rounds; "
        f"memory: {'peak GPU allocated' if cuda else 'peak RSS'}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['variant']:<6}{r['mode']:<12}{r['s_per_step']:>8.2f}{r['time_x']:>8.2f}"
            f"{r['flops_x']:>9.3f}{r['ops']:>7}{r['ops_x']:>7.2f}{r['syncs']:>6}"
            f"{r['peak_rss_mb']:>13.0f}{r['mem_x']:>7.2f}"
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


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
    parser.add_argument("--g-layers", type=int, default=1, help="(g): decoder layers")
    parser.add_argument("--g-seq", type=int, default=256, help="(g): tokens per example, timed")
    parser.add_argument("--g-batch", type=int, default=1, help="(g): examples, timed run")
    parser.add_argument("--g-count-seq", type=int, default=1024, help="(g): T of the meta count")
    parser.add_argument("--g-count-batch", type=int, default=8, help="(g): B of the meta count")
    parser.add_argument("--g-rounds", type=int, default=2, help="(g): timed steps per mode")
    parser.add_argument("--g-variants", default="full,lora", help="(g): full and/or lora")
    parser.add_argument(
        "--g-meta", type=int, default=1, help="(g): full-size FLOPs on meta: 0 no, 1 yes, 2 only"
    )
    parser.add_argument("--g-count-layers", type=int, default=16, help="(g): layers, meta count")
    args = parser.parse_args(argv)
    if args.workloads == "g":
        return run_g(args)
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
