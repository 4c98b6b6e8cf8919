"""What the engine releases is covered by the ε it reports (issue 14: findings 0, 1, 5, 9).

Secure by default (noise and sampling from OS entropy, nothing replayable from the seed), no
silent non-private optimizer step, tuple loaders, and refusal of everything the clipper cannot
bound: optimizer parameters outside the module, gradient leaves outside the clipper, buffers
written by a forward pass.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_helpers import ListDataset, Toy, gpt2, make_batch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from privacy_finetuner.config.schema import PrivacyConfig
from privacy_finetuner.engine import PrivacyEngine, causal_lm_loss
from privacy_finetuner.engine import sampler as sampler_module
from privacy_finetuner.errors import (
    EngineError,
    InvalidParameterError,
    PrivacyWarning,
    UnsupportedModuleError,
)


def _engine(
    model: nn.Module,
    *,
    secure: bool | None,
    seed: int = 0,
    n: int = 32,
    batch_size: int = 16,
    sigma: float = 1.0,
    clip: float = 1e-3,
    lr: float = 1.0,
) -> tuple[PrivacyEngine, torch.optim.Optimizer, Any]:
    """An engine over n causal-LM examples; ``secure=None`` uses the engine's default."""
    data = ListDataset(make_batch([4, 6, 3, 5] * (n // 4), 6, seed=3))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyWarning)
        engine = (
            PrivacyEngine(seed=seed)
            if secure is None
            else PrivacyEngine(seed=seed, secure_mode=secure)
        )
        _, opt, loader = engine.make_private(
            module=model,
            optimizer=opt,
            data_loader=DataLoader(data, batch_size=batch_size),
            noise_multiplier=sigma,
            max_grad_norm=clip,
        )
    return engine, opt, loader


def _flat(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


# -- 1. secure by default ------------------------------------------------------------------------
def test_secure_mode_is_the_default_everywhere() -> None:
    from privacy_finetuner.training.hf import DPTrainer

    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivacyWarning)  # the default must not warn
        engine = PrivacyEngine()
    assert engine.secure_mode and engine.epsilon_valid
    assert PrivacyConfig().secure_mode is True
    assert inspect.signature(DPTrainer.__init__).parameters["secure_mode"].default is True


def test_same_seed_secure_runs_differ_and_seeded_runs_replay() -> None:
    """The seed is public: with secure mode on it must predict neither batches nor noise."""
    outcomes: dict[bool, list[tuple[list[list[int]], Tensor]]] = {True: [], False: []}
    for secure in (True, False):
        for _ in range(2):
            torch.manual_seed(0)
            model = Toy()
            engine, _opt, loader = _engine(model, secure=secure, seed=7, n=64, batch_size=32)
            draws = [loader.draw() for _ in range(3)]
            before = _flat(model)
            engine.step(loader.sample())
            outcomes[secure].append((draws, _flat(model) - before))
    (d1, u1), (d2, u2) = outcomes[True]
    assert d1 != d2  # 3 draws of 64 units at q = 1/2: equal with probability 2^-192
    assert not torch.equal(u1, u2)
    (d1, u1), (d2, u2) = outcomes[False]
    assert d1 == d2 and torch.equal(u1, u2)


def test_non_secure_mode_says_epsilon_is_not_valid() -> None:
    engine, _opt, _loader = _engine(Toy(), secure=False)
    assert not engine.epsilon_valid and "secure_mode is off" in engine.invalid_reasons[0]
    with pytest.warns(PrivacyWarning, match="secure_mode is off"):
        engine.get_epsilon(1e-5)
    assert not engine.mechanism.epsilon_valid


def test_secure_resume_draws_fresh_noise(tmp_path: Path) -> None:
    torch.manual_seed(0)
    engine, opt, loader = _engine(Toy(), secure=True, clip=1e-6, sigma=1e5)
    engine.step(loader.sample())
    path = tmp_path / "engine.pt"
    engine.save_checkpoint(path, module=engine.module, optimizer=opt)  # type: ignore[arg-type]
    state = torch.load(path, weights_only=True)
    assert state["noise"] is None and "generator" not in state["sampler"]
    updates = []
    for _ in range(2):
        torch.manual_seed(0)
        model = Toy()
        resumed, opt2, loader2 = _engine(model, secure=True, clip=1e-6, sigma=1e5)
        resumed.load_checkpoint(path, module=model, optimizer=opt2)
        assert resumed.steps == 1
        before = _flat(model)
        resumed.step(loader2.collate([]))  # an empty batch: the update is the noise alone
        updates.append(_flat(model) - before)
    assert float(updates[0].abs().min()) > 0 and not torch.equal(updates[0], updates[1])


def test_poisson_inclusion_is_an_exact_integer_draw_from_os_entropy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Secure mode reads ``os.urandom`` directly and compares 53-bit integers with ⌊q·2⁵³⌋: no
    seeded PRNG in between, and no float32 grid (``torch.rand`` rounds q to multiples of 2⁻²⁴)."""
    n = 8
    q = 3 * 2.0**-30  # far below float32 rand's resolution
    threshold = sampler_module.inclusion_threshold(q)
    assert threshold == 3 * 2**23
    draws = [threshold - 1, threshold, 0, 2**53 - 1, threshold - 1, threshold + 1, 1, threshold]
    raw = b"".join(d.to_bytes(8, "little") for d in draws)
    monkeypatch.setattr(sampler_module.os, "urandom", lambda k: raw[:k])
    loader = sampler_module.PoissonDataLoader(
        ListDataset(make_batch([3] * n, 4)),
        collate_fn=torch.utils.data.default_collate,
        units=[[i] for i in range(n)],
        sample_rate=q,
        generator=torch.Generator().manual_seed(0),
        secure_mode=True,
    )
    assert loader.draw() == [[0], [2], [4], [6]]
    assert (
        sampler_module.inclusion_threshold(1.0) == 2**53
        and sampler_module.inclusion_threshold(0.1) <= 0.1 * 2**53
    )


# -- 2. no silent non-private path ---------------------------------------------------------------
def test_opacus_style_loop_refuses_instead_of_training_without_dp() -> None:
    """``model(**batch).loss; loss.backward(); optimizer.step()`` on the returned objects."""
    torch.manual_seed(0)
    model = gpt2(n_layer=1)
    engine, opt, loader = _engine(model, secure=True, sigma=0.0, clip=1e-3, lr=1.0)
    before = _flat(model)
    batch = next(iter(loader))
    while batch.num_units == 0:
        batch = next(iter(loader))
    loss = model(**batch).loss
    loss.backward()
    with pytest.raises(EngineError, match=r"engine\.step\(batch"):
        opt.step()
    assert torch.equal(_flat(model), before) and engine.steps == 0
    opt.zero_grad(set_to_none=True)
    result = engine.step(batch)  # the private step: clipped to C, accounted
    assert engine.steps == 1 and result.num_units == batch.num_units
    update = float((_flat(model) - before).norm())
    assert 0 < update <= 1.0 * 1e-3 * batch.num_units / engine.expected_batch_size + 1e-7


def test_a_backward_after_privatize_gradients_is_refused() -> None:
    torch.manual_seed(0)
    model = Toy()
    engine, opt, loader = _engine(model, secure=True)
    batch = loader.collate([[0], [1], [2]])
    engine.privatize_gradients(batch)
    causal_lm_loss(model, batch).sum().backward()  # raw gradient added on top
    with pytest.raises(EngineError, match="changed after"):
        opt.step()
    opt.zero_grad(set_to_none=True)
    engine.privatize_gradients(batch)
    opt.step()  # the hook point trainers use: privatise, then step once
    with pytest.raises(EngineError, match="did not come from the privacy engine"):
        opt.step()  # a second step on the same privatised gradient
    assert engine.steps == 2


class _Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))  # type: ignore[no-any-return]


def _ce(model: nn.Module, batch: Any) -> Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y, reduction="none")


def test_tuple_loader_as_in_opacus_tutorials() -> None:
    """A TensorDataset loader works; the loss function says how to read ``(x, y)``."""
    torch.manual_seed(0)
    x, y = torch.randn(10, 5), torch.randint(0, 3, (10,))
    model = _Classifier()
    reference = [
        torch.cat([g.flatten() for g in torch.autograd.grad(_ce(model, (x[i : i + 1], y[i : i + 1])).sum(), list(model.parameters()))])
        for i in range(10)
    ]  # fmt: skip
    clip = 0.5 * float(torch.stack([r.norm() for r in reference]).median())
    expected = sum(r * min(1.0, clip / (float(r.norm()) + 1e-6)) for r in reference)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = PrivacyEngine()
    _, opt, loader = engine.make_private(
        module=model,
        optimizer=opt,
        data_loader=DataLoader(TensorDataset(x, y), batch_size=10),  # q = 1
        noise_multiplier=1e-9,  # negligible next to the clipped sum
        max_grad_norm=clip,
        max_physical_batch_size=4,
    )
    batch = loader.sample()
    assert isinstance(batch, tuple) and len(batch) == 2 and batch.num_units == 10
    with pytest.raises(EngineError, match="needs loss_fn"):
        engine.privatize_gradients(batch)
    engine.privatize_gradients(batch, _ce)
    got = torch.cat([p.grad.flatten() for p in model.parameters()]) * engine.expected_batch_size  # type: ignore[union-attr]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)  # type: ignore[arg-type]
    opt.step()
    images, targets = loader.collate([])  # an empty batch unpacks like any other
    assert images.shape == (0, 5) and targets.shape == (0,)
    assert engine.step((images, targets), _ce).num_units == 0 and engine.steps == 2


# -- 3. the engine refuses what it cannot clip ---------------------------------------------------
def test_make_private_refuses_an_optimizer_parameter_outside_the_module() -> None:
    model = Toy()
    extra = nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([*model.parameters(), extra], lr=0.1)
    n_model = len(list(model.parameters()))
    engine = PrivacyEngine()
    with pytest.raises(EngineError, match=rf"param_groups\[0\]\['params'\]\[{n_model}\]"):
        engine.make_private(
            module=model,
            optimizer=opt,
            data_loader=DataLoader(ListDataset(make_batch([3, 4], 5)), batch_size=1),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
        )


def test_a_gradient_leaf_outside_the_clipper_is_refused() -> None:
    """A trainable tensor used only in a custom loss_fn would get the raw, unclipped sum."""
    torch.manual_seed(0)
    model = Toy()
    engine, _opt, loader = _engine(model, secure=True)
    temperature = torch.ones(1, requires_grad=True)

    def tempered(m: nn.Module, batch: Any) -> Tensor:
        return causal_lm_loss(m, batch) * temperature

    before = _flat(model)
    with pytest.raises(EngineError, match="unclipped gradient"):
        engine.step(loader.collate([[0], [1]]), tempered)
    assert temperature.grad is None and torch.equal(_flat(model), before) and engine.steps == 0
    engine.step(loader.collate([[0], [1]]))  # the engine is still usable afterwards
    assert engine.steps == 1


class _WithInstanceNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.norm = nn.InstanceNorm1d(4, track_running_stats=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.fc(x).unsqueeze(-1).expand(-1, -1, 3)).mean(-1)  # type: ignore[no-any-return]


class _CountsInForward(nn.Module):
    """Not a norm layer at all: keeps a data-dependent buffer (a running mean of its input)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.register_buffer("seen", torch.zeros(4))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.seen.mul_(0.9).add_(0.1 * x.detach().mean(0))
        return self.fc(x)  # type: ignore[no-any-return]


def _tuple_engine(model: nn.Module) -> tuple[PrivacyEngine, Any]:
    data = TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,)))
    engine = PrivacyEngine()
    _, _, loader = engine.make_private(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=DataLoader(data, batch_size=8),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
    )
    return engine, loader


def test_modules_whose_buffers_change_in_a_forward_are_refused() -> None:
    with pytest.raises(UnsupportedModuleError, match=r"norm.*running statistics"):
        _tuple_engine(_WithInstanceNorm())
    model = _CountsInForward()
    engine, loader = _tuple_engine(model)
    before = _flat(model)
    with pytest.raises(UnsupportedModuleError, match="buffer 'seen' changed"):
        engine.step(loader.sample(), lambda m, b: F.cross_entropy(m(b[0]), b[1], reduction="none"))
    assert torch.equal(_flat(model), before) and engine.steps == 0


# -- 5. what actually runs -----------------------------------------------------------------------
def test_the_running_mechanism_is_exposed_and_the_noise_floor_checked_on_it() -> None:
    engine, _opt, _loader = _engine(Toy(), secure=True, n=32, batch_size=8, sigma=0.7, clip=2.0)
    m = engine.mechanism
    assert (m.noise_multiplier, m.sample_rate, m.max_grad_norm) == (0.7, 0.25, 2.0)
    assert (m.num_units, m.expected_batch_size, m.secure_mode, m.epsilon_valid) == (
        32, 8.0, True, True,
    )  # fmt: skip
    engine.require_noise_floor(0.7)
    with pytest.raises(InvalidParameterError, match=r"below the floor 0\.8"):
        engine.require_noise_floor(0.8)
    with pytest.raises(EngineError, match="make_private"):
        _ = PrivacyEngine().mechanism
