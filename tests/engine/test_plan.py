"""The per-layer plan: its choices at real shapes, exactness in every mode, no host syncs."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from engine_helpers import (
    clip_and_sum,
    engine_clipped_sum,
    gpt2,
    llama,
    lora,
    make_batch,
    norms,
    private_engine,
    reference_per_example,
    rel_error,
)
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from privacy_finetuner.engine.plan import (
    GHOST,
    MATERIALISE,
    NORM_ONLY,
    WeightSpec,
    plan_weights,
)

MiB = 2**20
# Llama-3.2-1B: hidden 2048, MLP 8192, 32 query / 8 key-value heads of 64, vocab 128256 (tied).
LLAMA_1B = {
    "q": WeightSpec("q", 2048, 2048),
    "k": WeightSpec("k", 512, 2048),
    "v": WeightSpec("v", 512, 2048),
    "o": WeightSpec("o", 2048, 2048),
    "gate": WeightSpec("gate", 8192, 2048),
    "up": WeightSpec("up", 8192, 2048),
    "down": WeightSpec("down", 2048, 8192),
    "head": WeightSpec("head", 128256, 2048, uses=2),
}


def _modes(tokens: int, budget_mb: float, penalty: float = 1.0, batch: int = 8) -> dict[str, str]:
    plans = plan_weights(
        list(LLAMA_1B.values()),
        batch=batch,
        tokens=tokens,
        budget_bytes=budget_mb * MiB,
        exact_penalty=penalty,
    )
    return {k: v.mode for k, v in plans.items()}


def test_plan_at_llama_1b_shapes() -> None:
    # T = 1024, 256 MiB: k/v (32 MiB each at B = 8, most saved per byte) and one of q/o
    # (128 MiB) fit; the MLP (512 MiB each) and the 128k head (8 GiB) use the ghost norm.
    modes = _modes(1024, 256)
    assert modes["k"] == modes["v"] == MATERIALISE
    assert sorted((modes["q"], modes["o"])) == [GHOST, MATERIALISE]
    assert {modes[k] for k in ("gate", "up", "down", "head")} == {GHOST}
    # T = 4096: T·(p+d) > p·d for the MLP and attention, so per-example norms without storing
    # them (norm-only) are cheaper than T×T Grams; the head (p·d/(p+d) ≈ 2016 < T) too.
    long = _modes(4096, 0)
    assert {long[k] for k in LLAMA_1B} == {NORM_ONLY}
    # T = 128 with no memory: ghost everywhere; with plenty: all materialised.
    assert set(_modes(128, 0).values()) == {GHOST}
    assert set(_modes(128, 1e9).values()) == {MATERIALISE}


def test_plan_spends_the_budget_where_it_saves_most() -> None:
    # 40 MiB holds one k or v (32 MiB) but not a q (128 MiB): a small one is chosen.
    modes = _modes(1024, 40)
    assert sorted(k for k, m in modes.items() if m == MATERIALISE) in (["k"], ["v"])


def test_plan_on_cpu_penalises_fp32_products() -> None:
    """With exact products at fp32 speed (CPU, bf16), materialising is no longer free."""
    specs = [WeightSpec("lora_A", 16, 2048), WeightSpec("q", 2048, 2048)]
    plans = plan_weights(specs, batch=8, tokens=1024, budget_bytes=1e12, exact_penalty=3.0)
    assert plans["lora_A"].mode == MATERIALISE  # (3 - 1)·matmul < ghost's 3·T²(p+d)
    assert plans["q"].extra_flops > 0
    free = plan_weights(specs, batch=8, tokens=1024, budget_bytes=1e12)
    assert all(p.extra_flops == 0 for p in free.values())


MODELS: dict[str, Callable[[], nn.Module]] = {
    "gpt2-tied": gpt2,
    "llama-gqa": llama,  # 4 query heads, 2 key-value heads
    "llama-lora": lambda: lora(llama(), ["q_proj", "k_proj", "v_proj", "o_proj"]),
}


def _fresh(factory: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return factory()


@pytest.mark.parametrize("mode", [GHOST, MATERIALISE, NORM_ONLY])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_mode_matches_the_fp64_reference(
    name: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = make_batch([7, 5, 8, 3], 8, masked_prefix=1)
    per_example = reference_per_example(_fresh(MODELS[name]), batch)
    clip = float(norms(per_example).median())
    engine = private_engine(_fresh(MODELS[name]), batch, clip=clip, physical=2)
    assert engine.clipper is not None
    monkeypatch.setattr(engine.clipper, "plan_mode", lambda *_: mode)
    got = engine_clipped_sum(engine)
    assert rel_error(got, clip_and_sum(per_example, clip)) < 1e-5


def test_plan_is_logged_once_per_shape(caplog: pytest.LogCaptureFixture) -> None:
    batch = make_batch([6, 4, 5], 6)
    engine = private_engine(_fresh(llama), batch, clip=1.0, physical=3)
    with caplog.at_level(logging.INFO, logger="privacy_finetuner.engine.clipper"):
        engine_clipped_sum(engine)
        engine_clipped_sum(engine)
    lines = [r.getMessage() for r in caplog.records if "DP plan" in r.getMessage()]
    assert len(lines) == 1 and "3 examples x 6 tokens" in lines[0]
    assert engine.clipper is not None and len(engine.clipper.plans) == 1


class _SyncCounter(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Counts ops that need a device→host read (a sync on a GPU)."""

    SYNCING = ("_local_scalar_dense", "nonzero", "unique", "masked_select", "item")

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.__name__
        if any(s in name for s in self.SYNCING):
            self.syncs.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", ["gpt2-tied", "llama-gqa"])
def test_backward_and_clipping_need_no_host_sync(name: str) -> None:
    batch = make_batch([5, 6, 4], 6)
    engine = private_engine(_fresh(MODELS[name]), batch, clip=0.5, physical=3)
    clipper, model = engine.clipper, engine.module
    assert clipper is not None and model is not None
    from privacy_finetuner.engine import causal_lm_loss

    clipper.reset()
    clipper.begin(3)
    losses = causal_lm_loss(model, batch)
    counter = _SyncCounter()
    with counter:
        losses.sum().backward()  # type: ignore[no-untyped-call]
        clipper.end()
        clipper.clip_and_accumulate(None, 3)
    assert counter.syncs == []
    assert len(clipper.summed) > 0


def test_accumulators_are_lazy() -> None:
    """No buffers at step start; a parameter read before any use reads zeros."""
    batch = make_batch([3, 4], 5)
    engine = private_engine(_fresh(llama), batch, clip=1.0)
    clipper = engine.clipper
    assert clipper is not None
    clipper.reset()
    assert len(clipper.summed) == 0
    p = clipper.params[0]
    zero: Tensor = clipper.summed[p]
    assert zero.shape == p.shape and float(zero.abs().sum()) == 0.0
