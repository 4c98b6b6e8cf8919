"""The engine's clipped sum equals Σ_u clip(Σ_{i∈u} g_i, C) from materialised per-example grads."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from engine_helpers import (
    VOCAB,
    Toy,
    clip_and_sum,
    engine_clipped_sum,
    gpt2,
    llama,
    lora,
    make_batch,
    norms,
    private_engine,
    reference_per_example,
    reference_per_example_vmap,
    rel_error,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from privacy_finetuner.errors import EngineError, UnsupportedModuleError

TOL = 1e-5

MODELS: dict[str, Callable[[], nn.Module]] = {
    "gpt2-tied": gpt2,
    "llama": llama,
    "llama-lora": lambda: lora(llama(), ["q_proj", "v_proj"]),
    "gpt2-lora": lambda: lora(gpt2(), ["c_attn"], fan_in_fan_out=True),
}


def _fresh(factory: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return factory()


def _clips(per_example: dict[str, Tensor]) -> list[float]:
    """Huge (nothing clipped: the plain sum), the median norm, and far below every norm."""
    n = norms(per_example)
    assert float(n.min()) > 1e-3  # the tiny C below really clips every example
    return [1e8, float(n.median()), 1e-4]


CASES = [(name, budget) for name in sorted(MODELS) for budget in (0.0, 1e9)]


@pytest.mark.parametrize(("name", "budget"), [*CASES, ("gpt2-tied", 0.05), ("llama", 0.05)])
def test_transformers_match_reference(name: str, budget: float) -> None:
    """budget 0: every weight by ghost norm; 1e9: all materialised; 0.05 MB: a mix."""
    batch = make_batch([7, 5, 8, 2, 6], 8, masked_prefix=1)
    per_example = reference_per_example(_fresh(MODELS[name]), batch)
    for clip in _clips(per_example):
        engine = private_engine(_fresh(MODELS[name]), batch, clip=clip, physical=2)
        assert engine.clipper is not None
        engine.clipper.materialize_budget_mb = budget
        got = engine_clipped_sum(engine)
        assert rel_error(got, clip_and_sum(per_example, clip)) < TOL, (name, clip)


def test_huge_clip_is_the_plain_sum() -> None:
    batch = make_batch([6, 4, 8], 8)
    model = _fresh(gpt2)
    per_example = reference_per_example(model, batch)
    plain = {n: g.sum(0) for n, g in per_example.items()}
    got = engine_clipped_sum(private_engine(_fresh(gpt2), batch, clip=1e8))
    assert rel_error(got, plain) < TOL


@pytest.mark.parametrize("name", ["gpt2-tied", "llama-lora"])
def test_per_user_clipping(name: str) -> None:
    batch = make_batch([7, 5, 8, 3, 6, 4], 8)
    users = [3, 3, 1, 7, 7, 7]
    per_example = reference_per_example(_fresh(MODELS[name]), batch)
    clip = float(norms(per_example).median())
    for physical in (1, 4):  # a user larger than a micro-batch gets one of its own
        engine = private_engine(
            _fresh(MODELS[name]), batch, clip=clip, user_ids=users, physical=physical
        )
        got = engine_clipped_sum(engine)
        assert rel_error(got, clip_and_sum(per_example, clip, users)) < TOL
    # and it is not the per-example answer
    assert rel_error(got, clip_and_sum(per_example, clip)) > 1e-3


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lengths=st.lists(st.integers(0, 9), min_size=1, max_size=5),
    seq=st.integers(1, 9),
    clip_scale=st.sampled_from([1e-3, 0.5, 1.0, 2.0, 1e6]),
    physical=st.integers(1, 4),
    budget=st.sampled_from([0.0, 0.005, 1e9]),
    by_user=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_toy_layers_property(
    lengths: list[int],
    seq: int,
    clip_scale: float,
    physical: int,
    budget: float,
    by_user: bool,
    seed: int,
) -> None:
    """Embedding, LayerNorm, Linear, Conv1D, custom RMSNorm: any shape, padding, unit, C."""
    lengths = [min(n, seq) for n in lengths]
    batch = make_batch(lengths, seq, seed=seed)
    torch.manual_seed(seed)
    model = Toy()
    users = [i // 2 for i in range(len(lengths))] if by_user else None
    per_example = reference_per_example_vmap(model, batch)
    clip = clip_scale * max(float(norms(per_example).median()), 1e-3)
    want = clip_and_sum(per_example, clip, users)
    torch.manual_seed(seed)
    engine = private_engine(Toy(), batch, clip=clip, user_ids=users, physical=physical)
    assert engine.clipper is not None
    engine.clipper.materialize_budget_mb = budget
    got = engine_clipped_sum(engine)
    denom = sum(float((w**2).sum()) for w in want.values())
    if denom == 0:  # nothing to learn from (all padding): everything must be exactly zero
        assert all(float(g.abs().max()) == 0 for g in got.values())
    else:
        assert rel_error(got, want) < TOL


def test_padding_contributes_nothing() -> None:
    """Padding tokens (mask 0, label -100) change neither gradients nor norms.

    (Masked *labels* at real tokens are covered by the reference tests: masked_prefix.)
    """
    batch = make_batch([5, 3, 8], 8, masked_prefix=2)
    other = {k: v.clone() for k, v in batch.items()}
    other["input_ids"][batch["attention_mask"] == 0] = 17  # different padding tokens
    for make in (gpt2, llama):
        a = engine_clipped_sum(private_engine(_fresh(make), batch, clip=0.3))
        b = engine_clipped_sum(private_engine(_fresh(make), other, clip=0.3))
        assert rel_error(a, b) < 1e-6
        # examples that are all padding have zero gradient, whatever C
        empty = make_batch([0, 0], 8)
        zero = engine_clipped_sum(private_engine(_fresh(make), empty, clip=1e-6))
        assert all(float(v.abs().max()) == 0 for v in zero.values())


class Flipped(nn.Module):
    """Has a (d,) weight but is not elementwise: the norm-like check must reject it."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight.flip(0)


class Mixer(nn.Module):
    """A (d, d) parameter used through matmul: no fast rule, so vmap."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.mix = nn.Parameter(torch.eye(d) + 0.1 * torch.randn(d, d))

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x @ self.mix)


@pytest.mark.parametrize("mid", [Flipped, Mixer])
def test_vmap_fallback_warns_and_matches(mid: type[nn.Module]) -> None:
    batch = make_batch([4, 6, 3], 6)
    torch.manual_seed(0)
    model = Toy(mid=mid(12))
    per_example = reference_per_example(model, batch)
    clip = float(norms(per_example).median())
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="'mid'.*vmap"):
        engine = private_engine(Toy(mid=mid(12)), batch, clip=clip)
        got = engine_clipped_sum(engine)
    assert rel_error(got, clip_and_sum(per_example, clip)) < TOL


def test_frozen_parameters_cost_nothing() -> None:
    batch = make_batch([4, 6], 6)
    model = _fresh(MODELS["llama-lora"])
    engine = private_engine(model, batch, clip=1.0)
    assert engine.clipper is not None
    assert set(engine.clipper.kinds.values()) == {"linear"}  # only LoRA factors
    assert all("lora_" in n for n in engine.clipper.kinds)
    engine_clipped_sum(engine)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_batchnorm_is_refused() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    with pytest.raises(UnsupportedModuleError, match="BatchNorm"):
        private_engine(model, make_batch([2], 2), clip=1.0)


class Reuse(Toy):
    """Uses the head's weight outside the head module: cannot be clipped per example."""

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        out: Tensor = super().forward(input_ids) + self.emb(input_ids) @ self.head.weight.T
        return out


def test_parameter_used_outside_its_module_is_refused() -> None:
    batch = make_batch([3, 4], 5)
    engine = private_engine(Reuse(), batch, clip=1.0)
    with pytest.raises(EngineError, match="outside its module"):
        engine_clipped_sum(engine)


def test_model_is_unchanged_outside_dp_steps() -> None:
    batch = make_batch([3, 4], 5)
    torch.manual_seed(0)
    plain = Toy()
    torch.manual_seed(0)
    model = Toy()
    private_engine(model, batch, clip=1.0)
    ids = torch.randint(0, VOCAB, (2, 5))
    torch.testing.assert_close(model(ids), plain(ids))
    model(ids).sum().backward()  # ordinary autograd still works on the patched model
    assert model.head.weight.grad is not None


class SharedNorm(Toy):
    """Uses the LayerNorm's weight outside the LayerNorm: that use must not be dropped."""

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        shared = (self.emb(input_ids) * self.ln.weight).sum(-1)[..., None]
        out: Tensor = super().forward(input_ids) + shared
        return out


def test_norm_parameter_shared_outside_its_module_is_refused() -> None:
    batch = make_batch([3, 4], 5)
    engine = private_engine(SharedNorm(), batch, clip=1.0)
    assert engine.clipper is not None and engine.clipper.kinds["ln"] == "norm"
    with pytest.raises(EngineError, match="outside its module"):
        engine_clipped_sum(engine)


def test_non_finite_unit_is_skipped_and_counted() -> None:
    """An example whose gradient overflows is dropped (factor 0, counted); the rest are exact."""
    batch = make_batch([6, 5, 7, 4], 7)
    model = _fresh(llama)
    scale = torch.tensor([1.0, float("inf"), 1.0, 1.0])
    calls: list[int] = []

    def loss_fn(m: nn.Module, b: dict[str, Tensor]) -> Tensor:
        from privacy_finetuner.engine import causal_lm_loss

        start = 2 * len(calls)  # micro-batches of 2, in order
        calls.append(start)
        return causal_lm_loss(m, b) * scale[start : start + b["input_ids"].shape[0]]

    per_example = reference_per_example(model, batch)
    kept = {n: g[[0, 2, 3]] for n, g in per_example.items()}
    clip = float(norms(kept).median())
    engine = private_engine(_fresh(llama), batch, clip=clip, physical=2)
    got = engine_clipped_sum(engine, loss_fn)
    assert all(bool(torch.isfinite(v).all()) for v in got.values())
    assert rel_error(got, clip_and_sum(kept, clip)) < TOL
    assert engine.clipper is not None and engine.clipper.skipped_units == 1
