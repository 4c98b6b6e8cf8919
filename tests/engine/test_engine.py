"""Noise, warnings, budget stop, checkpoint/resume and the step loop of PrivacyEngine."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from engine_helpers import ListDataset, Toy, make_batch, private_engine
from torch import nn
from torch.utils.data import DataLoader

from privacy_finetuner.accounting import DpSegment, compute_epsilon
from privacy_finetuner.engine import PrivacyEngine, StepResult
from privacy_finetuner.errors import CheckpointError, EngineError, PrivacyWarning


def _quiet_engine(**kwargs: object) -> PrivacyEngine:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyWarning)
        return PrivacyEngine(**kwargs)  # type: ignore[arg-type]


def _setup(
    *,
    n: int = 24,
    batch_size: int = 4,
    sigma: float = 1.0,
    seed: int = 0,
    physical: int = 3,
    secure: bool = False,
) -> tuple[nn.Module, torch.optim.Optimizer, PrivacyEngine, object]:
    """A seeded (replayable, secure_mode=False) engine unless ``secure``."""
    torch.manual_seed(123)
    model = Toy()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = ListDataset(make_batch([5, 3, 6, 2] * (n // 4), 6, seed=9))
    engine = _quiet_engine(seed=seed, secure_mode=secure)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyWarning)
        model, opt, loader = engine.make_private(
            module=model,
            optimizer=opt,
            data_loader=DataLoader(data, batch_size=batch_size),
            noise_multiplier=sigma,
            max_grad_norm=0.5,
            max_physical_batch_size=physical,
        )
    return model, opt, engine, loader


def test_noise_has_std_sigma_c_and_is_added_once_per_step() -> None:
    """With C tiny the signal is ≤ B·C ≈ 0; the noised sum must have std σC, whatever the
    number of micro-batches (noise per micro-batch would give std σC·√(#micro-batches))."""
    sigma, clip = 3.0, 1e-7
    batch = make_batch([6] * 8, 6)
    torch.manual_seed(0)
    model = Toy(d=64, h=128)
    engine = private_engine(model, batch, clip=clip, noise=1.0, physical=2)
    engine.noise_multiplier = sigma / clip  # noise std σ'C = 3
    engine.privatize_gradients(engine.data_loader.sample())
    noise = torch.cat([p.grad.flatten() for p in model.parameters()]) * engine.expected_batch_size
    assert noise.numel() > 5000
    std = float(noise.std())
    assert abs(std - sigma) < 0.05 * sigma  # ±5% ≫ sampling error 1/√(2n) ≈ 1%
    assert abs(float(noise.mean())) < 4 * sigma / noise.numel() ** 0.5


def test_gradient_is_divided_by_the_expected_batch_size() -> None:
    _model, _opt, engine, loader = _setup(sigma=0.0)
    batch = next(iter(loader))
    engine.privatize_gradients(batch)
    grad = torch.cat([p.grad.flatten() for p in engine.clipper.params])  # type: ignore[union-attr]
    # every example is clipped to ≤ C = 0.5, so ‖Σ‖ ≤ 0.5·B and ‖grad‖ ≤ 0.5·B / (q·N)
    assert 0 < float(grad.norm()) <= 0.5 * batch["input_ids"].shape[0] / 4 + 1e-6
    assert engine.expected_batch_size == pytest.approx(4.0)


def test_zero_noise_warns_epsilon_is_infinite() -> None:
    batch = make_batch([3, 4], 5)
    engine = _quiet_engine(seed=0)
    model = Toy()
    with pytest.warns(PrivacyWarning, match="infinite"):
        engine.make_private(
            module=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            data_loader=DataLoader(ListDataset(batch), batch_size=1),
            noise_multiplier=0.0,
            max_grad_norm=1.0,
        )
    engine.step(engine.data_loader.sample())
    assert math.isinf(engine.get_epsilon(1e-5))


def test_secure_mode_warns_only_when_off() -> None:
    with pytest.warns(PrivacyWarning, match="secure_mode=False"):
        PrivacyEngine(secure_mode=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivacyWarning)
        engine = PrivacyEngine(secure_mode=True, seed=0)
    assert engine.secure_mode


def test_steps_account_each_logical_batch_once_even_empty() -> None:
    _model, _opt, engine, loader = _setup(n=40, batch_size=1)  # q = 1/40: mostly empty batches
    results = [engine.step(b) for b in loader]
    assert len(results) == 40 and engine.steps == 40
    assert any(r.num_examples == 0 for r in results)
    empty = next(r for r in results if r.num_examples == 0)
    assert math.isnan(empty.loss) and empty.num_units == 0 and not empty.stopped
    assert engine.accountant.history == (DpSegment(1.0, 1 / 40, 40),)
    full = next(r for r in results if r.num_examples > 0)
    assert isinstance(full, StepResult) and full.loss > 0


def test_empty_batch_still_noises_and_steps() -> None:
    model, _opt, engine, loader = _setup()
    before = [p.detach().clone() for p in model.parameters()]
    empty = {k: v[:0] for k, v in next(iter(loader)).items()}
    engine.step(empty)
    assert engine.steps == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_budget_stop_never_exceeds_target() -> None:
    torch.manual_seed(0)
    model = Toy()
    data = ListDataset(make_batch([4] * 20, 4))
    engine = _quiet_engine(seed=0, accountant="rdp")  # rdp: fast calibration in tests
    target, delta = 2.0, 1e-3
    engine.make_private_with_epsilon(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=DataLoader(data, batch_size=2),
        target_epsilon=target,
        target_delta=delta,
        epochs=1,
        max_grad_norm=1.0,
    )
    assert engine.noise_multiplier > 0 and engine.sample_rate == pytest.approx(0.1)
    taken = 0
    for _ in range(100):  # far more epochs than calibrated for
        for batch in engine.data_loader:
            if engine.step(batch).stopped:
                break
            taken += 1
        if engine.budget_exhausted:
            break
    assert engine.budget_exhausted and taken == engine.steps >= 10  # ≥ the planned epoch
    assert engine.get_epsilon(delta) <= target
    one_more = DpSegment(engine.noise_multiplier, engine.sample_rate, engine.steps + 1)
    assert compute_epsilon([one_more], delta=delta, accountant="rdp") > target
    params = [p.detach().clone() for p in model.parameters()]
    result = engine.step(engine.data_loader.sample())
    assert result.stopped and engine.steps == taken
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters(), strict=True))


def _train(engine: PrivacyEngine, loader: object, steps: int) -> None:
    it = iter(loader)  # type: ignore[call-overload]
    for _ in range(steps):
        engine.step(next(it))


def test_checkpoint_resume_is_identical(tmp_path: Path) -> None:
    model, opt, engine, loader = _setup(seed=5)
    _train(engine, loader, 6)
    straight = [p.detach().clone() for p in model.parameters()]
    eps = engine.get_epsilon(1e-5)

    model, opt, engine, loader = _setup(seed=5)
    _train(engine, loader, 3)
    engine.save_checkpoint(tmp_path / "ckpt.pt", module=model, optimizer=opt)
    model, opt, engine, loader = _setup(seed=99)  # different seed: state must come from disk
    engine.load_checkpoint(tmp_path / "ckpt.pt", module=model, optimizer=opt)
    assert engine.steps == 3
    _train(engine, loader, 3)
    assert engine.get_epsilon(1e-5) == eps
    for a, b in zip(straight, model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_checkpoint_with_other_dp_parameters_is_refused(tmp_path: Path) -> None:
    model, opt, engine, _loader = _setup(sigma=1.0)
    engine.save_checkpoint(tmp_path / "c.pt", module=model, optimizer=opt)
    model, opt, engine, _loader = _setup(sigma=2.0)
    with pytest.raises(CheckpointError, match="noise_multiplier"):
        engine.load_checkpoint(tmp_path / "c.pt", module=model, optimizer=opt)
    with pytest.raises(CheckpointError):
        engine.load_checkpoint(tmp_path / "missing.pt", module=model, optimizer=opt)


def test_resume_restores_budget_stop(tmp_path: Path) -> None:
    data = ListDataset(make_batch([4] * 20, 4))
    runs = []
    for resume in (False, True):
        torch.manual_seed(0)
        model = Toy()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        engine = _quiet_engine(seed=0, accountant="rdp")
        engine.make_private(
            module=model,
            optimizer=opt,
            data_loader=DataLoader(data, batch_size=2),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
        )
        engine.set_budget(target_epsilon=2.0, target_delta=1e-3)
        if resume:
            engine.load_checkpoint(tmp_path / "b.pt", module=model, optimizer=opt)
        while not engine.budget_exhausted:
            engine.step(engine.data_loader.sample())
            if not resume and engine.steps == 4:
                engine.save_checkpoint(tmp_path / "b.pt", module=model, optimizer=opt)
        runs.append((engine.steps, engine.get_epsilon(1e-3)))
    assert runs[0] == runs[1]


def test_custom_loss_fn_and_shape_check() -> None:
    _model, _opt, engine, loader = _setup(sigma=0.0)
    batch = next(b for b in loader if b["input_ids"].shape[0] > 0)

    def mean_logit(m: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return m(b["input_ids"]).mean((1, 2))

    assert engine.step(batch, loss_fn=mean_logit).num_examples == batch["input_ids"].shape[0]
    with pytest.raises(EngineError, match="shape"):
        engine.step(batch, loss_fn=lambda m, b: m(b["input_ids"]).mean())


def test_make_private_twice_is_refused() -> None:
    model, opt, engine, loader = _setup()
    with pytest.raises(EngineError, match="already"):
        engine.make_private(
            module=model, optimizer=opt, data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0
        )


def _fp32_reference_and_fresh_model() -> tuple[dict[str, torch.Tensor], nn.Module, Toy]:
    """A batch, a Toy model with its fp32 DP gradients set, and an identically initialised Toy."""
    batch = make_batch([5, 6, 4], 6)
    torch.manual_seed(0)
    ref_model = Toy()
    ref = private_engine(ref_model, batch, clip=0.05)
    ref.privatize_gradients(ref.data_loader.sample())
    torch.manual_seed(0)
    return batch, ref_model, Toy()


def test_bf16_autocast_keeps_dp_arithmetic_fp32() -> None:
    batch, ref_model, model = _fp32_reference_and_fresh_model()
    seen: list[torch.dtype] = []  # the caller's autocast is honoured, not switched off
    model.up.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    engine = private_engine(model, batch, clip=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        engine.privatize_gradients(engine.data_loader.sample())
    assert seen and set(seen) == {torch.bfloat16}
    for a, b in zip(ref_model.parameters(), model.parameters(), strict=True):
        assert b.grad is not None and b.grad.dtype == torch.float32
        assert torch.isfinite(b.grad).all()
        assert float((a.grad - b.grad).norm()) <= 0.1 * float(a.grad.norm()) + 1e-6  # type: ignore[operator]


def test_autocast_dtype_runs_the_forward_in_bf16_and_clips_in_fp32() -> None:
    """``make_private(autocast_dtype=bf16)``: the engine itself autocasts the forward (what
    ``training.precision: bf16`` asks for); gradients stay fp32 and close to the fp32 run's."""
    batch, ref_model, model = _fp32_reference_and_fresh_model()
    seen: list[torch.dtype] = []
    model.up.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    engine = private_engine(model, batch, clip=0.05, autocast_dtype=torch.bfloat16)
    engine.privatize_gradients(engine.data_loader.sample())
    assert seen and set(seen) == {torch.bfloat16}
    for a, b in zip(ref_model.parameters(), model.parameters(), strict=True):
        assert b.grad is not None and b.grad.dtype == torch.float32
        assert float((a.grad - b.grad).norm()) <= 0.1 * float(a.grad.norm()) + 1e-6  # type: ignore[operator]
