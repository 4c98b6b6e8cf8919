"""The PrivacyEngine façade: make a model, optimizer and loader private, then step.

One logical step (see ``docs/engine.md`` and the design note):

1. the loader yields a Poisson-sampled logical batch (units join with probability q);
2. it is split into micro-batches of at most ``max_physical_batch_size`` examples (never splitting
   a user); each gets one forward and ONE backward of Σᵢ lossᵢ, during which the layer rules report
   per-example gradients in factored form; units are clipped to C and their clipped sum is added
   to fp32 buffers;
3. N(0, σ²C²) noise is added once, the sum is divided by the *expected* batch size q·N (the actual
   size is not private), the optimizer steps, and the accountant records (σ, q).

With ``data_parallel`` (see :mod:`.distributed`) the logical batch is split across ranks, rank 0
adds the noise to its share and the clipped sums are all-reduced before step 3's division.

No gradient reaches the optimizer without passing through the clipper: the returned optimizer
refuses ``step()`` unless the engine privatised the gradients it is about to apply (so the
Opacus-style ``loss.backward(); optimizer.step()`` raises instead of silently training without
DP), ``make_private`` refuses optimizer parameters the module does not hold, every backward is
preceded by a walk of the autograd graph that refuses leaves outside the clipper, and a forward
that changes a buffer (running statistics carry data of the whole batch) is refused.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from privacy_finetuner.accounting import (
    PrivacyAccountant,
    calibrate_noise_multiplier,
    max_steps_within_budget,
)
from privacy_finetuner.engine.batching import (
    LossFn,
    batch_values,
    causal_lm_loss,
    micro_batches,
    slice_batch,
    to_device,
)
from privacy_finetuner.engine.checkpoint import load_engine_checkpoint, save_engine_checkpoint
from privacy_finetuner.engine.clipper import GradClipper
from privacy_finetuner.engine.distributed import (
    NOISE_RANK,
    DataParallel,
    DistributedPoissonLoader,
    all_reduce_sum_,
    broadcast_module,
)
from privacy_finetuner.engine.noise import NoiseSource, os_seed
from privacy_finetuner.engine.sampler import PoissonDataLoader, make_poisson_loader
from privacy_finetuner.errors import (
    EngineError,
    InvalidParameterError,
    PrivacyWarning,
    UnsupportedModuleError,
)

__all__ = ["Mechanism", "PrivacyEngine", "StepResult"]

_NOT_SECURE = (
    "secure_mode is off: noise and Poisson sampling come from a seeded, replayable generator, so "
    "anyone who knows the seed can remove the noise and knows every batch"
)
_NOT_POISSON = "batches were not Poisson-sampled (poisson_sampling=False)"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepResult:
    """Outcome of one logical step.

    Attributes:
        loss: mean per-unit loss of the sampled units (NaN for an empty batch or a stopped step).
        num_units: units (examples or users) in the logical batch.
        num_examples: examples in the logical batch.
        stopped: True if the step was not taken because the ε budget is spent.
    """

    loss: float
    num_units: int
    num_examples: int
    stopped: bool = False


@dataclass(frozen=True)
class Mechanism:
    """The mechanism the engine actually runs, for checks on what runs rather than on a plan
    (e.g. a service's noise-multiplier floor, or a trainer comparing against its reservation).

    Attributes:
        noise_multiplier: σ of the noise added per step (std σ·C per coordinate).
        sample_rate: q, the per-step inclusion probability the accountant composes.
        max_grad_norm: C.
        privacy_unit: "example" or "user".
        num_units: N, the units the sampler draws from (None without Poisson sampling).
        expected_batch_size: q·N, the divisor of the noised sum.
        secure_mode: noise and sampling from OS entropy.
        epsilon_valid: whether the accountant's ε is a guarantee for this run.
        invalid_reasons: why not, if it is not.
    """

    noise_multiplier: float
    sample_rate: float
    max_grad_norm: float
    privacy_unit: str
    num_units: int | None
    expected_batch_size: float
    secure_mode: bool
    epsilon_valid: bool
    invalid_reasons: tuple[str, ...]


class PrivacyEngine:
    """DP-SGD for PyTorch / Hugging Face models, per example or per user.

    Args:
        accountant: "pld" (tight) or "rdp".
        secure_mode: (default) Poisson sampling straight from ``os.urandom`` and noise from
            generators freshly seeded with 192 OS bits every draw (see :mod:`.noise`). Off, runs
            are reproducible from ``seed`` and :attr:`epsilon_valid` is False: tests only.
        seed: seed of the sampler and noise generators when not in secure mode (None: from the
            OS); ignored in secure mode, where the seed may be public.
        data_parallel: this rank's place in a data-parallel run (:mod:`.distributed`); every rank
            then works on its share of each logical batch, rank 0 samples and draws the noise.
    """

    def __init__(
        self,
        accountant: str = "pld",
        secure_mode: bool = True,
        seed: int | None = None,
        *,
        data_parallel: DataParallel | None = None,
    ) -> None:
        self.accountant = PrivacyAccountant(accountant)
        self.secure_mode = secure_mode
        self.seed = seed
        self.data_parallel = data_parallel
        if not secure_mode:
            warnings.warn(
                "secure_mode=False: noise and sampling come from a seeded, replayable PRNG; fine "
                "for experiments, use secure_mode=True for a production guarantee",
                PrivacyWarning,
                stacklevel=2,
            )
        self.noise_multiplier = 0.0
        self.max_grad_norm = 0.0
        self.sample_rate = 0.0
        self.privacy_unit = "example"
        self.invalid_reasons: list[str] = [] if secure_mode else [_NOT_SECURE]
        self.max_physical_batch_size = 8
        self.autocast_dtype: torch.dtype | None = None
        self.module: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.data_loader: Any = None
        self.clipper: GradClipper | None = None
        self.noise: NoiseSource | None = None
        self.expected_batch_size = 0.0
        self.target_epsilon: float | None = None
        self.target_delta: float | None = None
        self._step_limit: int | None = None
        self._trainable_ids: frozenset[int] = frozenset()
        self._privatised: dict[int, tuple[Tensor, int]] | None = None

    @property
    def epsilon_valid(self) -> bool:
        """Whether the reported ε is a guarantee: secure mode and Poisson sampling."""
        return not self.invalid_reasons

    @property
    def mechanism(self) -> Mechanism:
        """The (σ, q, C, unit, N) this engine runs now (after :meth:`make_private`)."""
        if self.clipper is None:
            raise EngineError("call make_private first")
        loader = self.poisson_loader
        return Mechanism(
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            max_grad_norm=self.max_grad_norm,
            privacy_unit=self.privacy_unit,
            num_units=loader.num_units if loader is not None else None,
            expected_batch_size=self.expected_batch_size,
            secure_mode=self.secure_mode,
            epsilon_valid=self.epsilon_valid,
            invalid_reasons=tuple(self.invalid_reasons),
        )

    def require_noise_floor(self, floor: float) -> None:
        """Raise unless the σ that actually runs is at least ``floor`` (an operator's minimum).

        Raises:
            InvalidParameterError: σ < floor.
        """
        if self.noise_multiplier < floor:
            raise InvalidParameterError(
                f"the engine runs noise multiplier σ = {self.noise_multiplier:.6g}, below the "
                f"floor {floor:g}"
            )

    # -- set-up -------------------------------------------------------------------------------
    def make_private(
        self,
        *,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        data_loader: Any,
        noise_multiplier: float,
        max_grad_norm: float,
        privacy_unit: str = "example",
        max_physical_batch_size: int = 8,
        max_examples_per_user: int | None = None,
        user_ids: Any = None,
        poisson_sampling: bool = True,
        autocast_dtype: torch.dtype | None = None,
    ) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
        """Attach per-unit clipping to ``module`` and return (module, optimizer, loader).

        Args:
            module: the model (modified in place: its trainable layers get per-example rules).
            optimizer: any torch optimizer over the module's trainable parameters.
            data_loader: a DataLoader; q = batch_size / number of units. Re-sampled with Poisson
                sampling, so the returned loader's batches vary in size and may be empty.
            noise_multiplier: σ; noise std per coordinate is σ·C. 0 is allowed (ε = ∞, warns).
            max_grad_norm: C, the bound on one unit's gradient norm.
            privacy_unit: "example" or "user" (ε is then per user).
            max_physical_batch_size: examples per forward/backward (memory bound).
            max_examples_per_user: cap on a sampled user's examples, chosen at random.
            user_ids: one user id per dataset index (else ``dataset.user_ids``), for "user".
            poisson_sampling: False keeps the loader as is; ε is then reported as not valid.
            autocast_dtype: run forward passes under ``torch.autocast`` with this dtype (e.g.
                ``torch.bfloat16`` on GPUs); norms, clipping and noise stay in fp32.

        Raises:
            InvalidParameterError: σ < 0, C ≤ 0, a bad unit or physical batch size.
            SamplingError: the loader cannot be Poisson-sampled and ``poisson_sampling`` is True.
            UnsupportedModuleError: the model contains BatchNorm or similar, or a module that
                tracks running statistics.
            EngineError: the optimizer holds a parameter that ``module`` does not.
        """
        if self.clipper is not None:
            raise EngineError("make_private was already called on this engine")
        if not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
            raise InvalidParameterError(f"noise_multiplier σ must be ≥ 0, got {noise_multiplier}")
        if not max_grad_norm > 0:
            raise InvalidParameterError(f"max_grad_norm C must be > 0, got {max_grad_norm}")
        if privacy_unit not in ("example", "user"):
            raise InvalidParameterError(f"privacy_unit must be 'example' or 'user': {privacy_unit}")
        if max_physical_batch_size < 1:
            raise InvalidParameterError("max_physical_batch_size must be ≥ 1")
        if noise_multiplier == 0:
            warnings.warn(
                "noise_multiplier=0: no noise is added, so ε is infinite (testing only)",
                PrivacyWarning,
                stacklevel=2,
            )
        loader = self._wrap_loader(
            data_loader, privacy_unit, max_examples_per_user, user_ids, poisson_sampling
        )
        _refuse_running_stats(module)
        _refuse_foreign_optimizer_params(module, optimizer)
        if self.data_parallel is not None:
            broadcast_module(module, self.data_parallel)
        self.clipper = GradClipper(module, max_grad_norm=max_grad_norm)
        self._trainable_ids = frozenset(id(p) for p in self.clipper.params)
        optimizer.register_step_pre_hook(self._guard_optimizer_step)
        optimizer.register_step_post_hook(self._after_optimizer_step)
        self.noise = NoiseSource(
            device=self.clipper.params[0].device, secure_mode=self.secure_mode, seed=self.seed
        )
        self.module, self.optimizer, self.data_loader = module, optimizer, loader
        self.noise_multiplier, self.max_grad_norm = float(noise_multiplier), float(max_grad_norm)
        self.privacy_unit = privacy_unit
        self.max_physical_batch_size = max_physical_batch_size
        self.autocast_dtype = autocast_dtype
        return module, optimizer, loader

    def _wrap_loader(
        self,
        data_loader: Any,
        privacy_unit: str,
        max_examples_per_user: int | None,
        user_ids: Any,
        poisson_sampling: bool,
    ) -> Any:
        by_user = privacy_unit == "user"
        if poisson_sampling:
            seed = os_seed() if self.seed is None or self.secure_mode else self.seed
            generator = torch.Generator().manual_seed(seed)
            loader = make_poisson_loader(
                data_loader,
                user_ids=user_ids,
                by_user=by_user,
                max_examples_per_user=max_examples_per_user,
                generator=generator,
                secure_mode=self.secure_mode,
            )
            self.sample_rate = loader.sample_rate
            self.expected_batch_size = loader.sample_rate * loader.num_units
            if self.data_parallel is not None:
                return DistributedPoissonLoader(loader, self.data_parallel)
            return loader
        if self.data_parallel is not None:
            raise EngineError(
                "data-parallel training needs Poisson sampling (poisson_sampling=True)"
            )
        if by_user:
            raise EngineError("privacy_unit='user' needs Poisson sampling (poisson_sampling=True)")
        batch_size = getattr(data_loader, "batch_size", None) or getattr(
            getattr(data_loader, "batch_sampler", None), "batch_size", None
        )
        dataset = getattr(data_loader, "dataset", None)
        if batch_size is None or dataset is None:
            raise EngineError("poisson_sampling=False needs a loader with batch_size and dataset")
        warnings.warn(
            "poisson_sampling=False: batches are not Poisson-sampled, so the reported ε is NOT a "
            "valid guarantee for this run (engine.epsilon_valid is False)",
            PrivacyWarning,
            stacklevel=3,
        )
        self.invalid_reasons.append(_NOT_POISSON)
        self.sample_rate = batch_size / len(dataset)
        self.expected_batch_size = float(batch_size)
        return data_loader

    def make_private_with_epsilon(
        self,
        *,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        data_loader: Any,
        target_epsilon: float,
        target_delta: float,
        epochs: int,
        max_grad_norm: float,
        **kwargs: Any,
    ) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
        """Calibrate σ so that ``epochs`` epochs spend at most (ε, δ), and stop at the budget.

        Args:
            target_epsilon: ε the whole run may spend; training stops before exceeding it.
            target_delta: δ of the guarantee.
            epochs: planned epochs; steps = epochs · (1/q).
            max_grad_norm: C.
            **kwargs: the other arguments of :meth:`make_private`.
        """
        if epochs < 1:
            raise InvalidParameterError(f"epochs must be ≥ 1, got {epochs}")
        self.make_private(
            module=module,
            optimizer=optimizer,
            data_loader=data_loader,
            noise_multiplier=1.0,
            max_grad_norm=max_grad_norm,
            **kwargs,
        )
        steps = epochs * max(1, round(1 / self.sample_rate))
        calibration = calibrate_noise_multiplier(
            target_epsilon=target_epsilon,
            delta=target_delta,
            sample_rate=self.sample_rate,
            steps=steps,
            accountant=self.accountant.mechanism,
        )
        self.noise_multiplier = calibration.noise_multiplier
        self.set_budget(target_epsilon=target_epsilon, target_delta=target_delta)
        return module, optimizer, self.data_loader

    def set_budget(self, *, target_epsilon: float, target_delta: float) -> None:
        """Stop training before the first step that would make ε(δ) exceed ``target_epsilon``."""
        self.target_epsilon, self.target_delta = target_epsilon, target_delta
        self._update_limit()

    def _update_limit(self) -> None:
        if self.target_epsilon is None or self.target_delta is None or self.noise_multiplier == 0:
            self._step_limit = None if self.target_epsilon is None else self.accountant.steps
            return
        more = max_steps_within_budget(
            target_epsilon=self.target_epsilon,
            delta=self.target_delta,
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            prior=self.accountant.history,
            accountant=self.accountant.mechanism,
        )
        self._step_limit = self.accountant.steps + more

    # -- stepping -----------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        """Logical steps taken (and accounted), including those before a resume."""
        return self.accountant.steps

    @property
    def budget_exhausted(self) -> bool:
        """True when the next step would exceed the target ε (never true without a budget)."""
        return self._step_limit is not None and self.accountant.steps >= self._step_limit

    def get_epsilon(self, delta: float) -> float:
        """ε(δ) spent so far (per unit); see :attr:`epsilon_valid`."""
        if not self.epsilon_valid:
            warnings.warn(
                "ε is not valid as a guarantee for this run: " + "; ".join(self.invalid_reasons),
                PrivacyWarning,
                stacklevel=2,
            )
        return self.accountant.get_epsilon(delta)

    def _require(self) -> tuple[nn.Module, torch.optim.Optimizer, GradClipper, NoiseSource]:
        if self.module is None or self.optimizer is None or self.clipper is None:
            raise EngineError("call make_private first")
        if self.noise is None:  # set together with the clipper
            raise EngineError("call make_private first")
        return self.module, self.optimizer, self.clipper, self.noise

    def step(self, batch: Any, loss_fn: LossFn | None = None) -> StepResult:
        """One DP-SGD step on a logical batch: clip, noise, ``optimizer.step()``, account.

        This is the training step: ``optimizer.step()`` on its own refuses gradients that did not
        come from the engine (a plain ``loss.backward()`` is neither clipped nor noised).

        Args:
            batch: a logical batch from the returned loader (dict of batch-first tensors, or a
                tuple of them such as a ``TensorDataset`` yields).
            loss_fn: ``loss_fn(model, batch) -> (B,)`` per-example losses; default: causal-LM
                mean over each example's target tokens (labels -100 ignored); required for
                tuple batches, e.g. ``lambda m, b: F.cross_entropy(m(b[0]), b[1],
                reduction="none")``.

        Returns:
            The :class:`StepResult`; ``stopped`` if the budget is spent (nothing happens then).
        """
        _, optimizer, clipper, _ = self._require()
        if self.budget_exhausted:
            return StepResult(loss=math.nan, num_units=0, num_examples=0, stopped=True)
        result = self.privatize_gradients(batch, loss_fn)
        optimizer.step()
        for p in clipper.params:
            p.grad = None
        self._privatised = None
        return result

    def _guard_optimizer_step(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        """Optimizer pre-step hook: only gradients the engine privatised may be applied."""
        recorded = self._privatised
        if recorded is None:
            raise EngineError(
                "optimizer.step() was called on gradients that did not come from the privacy "
                "engine: a plain loss.backward() is neither clipped nor noised nor accounted. "
                "Call engine.step(batch, loss_fn) instead (or engine.privatize_gradients(batch, "
                "loss_fn) and then optimizer.step())"
            )
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                seen = recorded.get(id(p))
                if seen is None or seen[0] is not p.grad or seen[1] != p.grad._version:
                    raise EngineError(
                        "a gradient changed after engine.privatize_gradients (another "
                        "backward, or a parameter outside the private module): refusing to "
                        "apply a gradient that was not clipped and noised; call "
                        "optimizer.zero_grad() and engine.step(batch, loss_fn)"
                    )

    def _after_optimizer_step(self, *_: Any) -> None:
        self._privatised = None  # one privatised gradient, one optimizer step

    def _units(self, batch: Any, size: int) -> tuple[Tensor, int]:
        unit_index = getattr(batch, "unit_index", None)
        if unit_index is None or self.privacy_unit == "example":
            if self.privacy_unit == "user":
                raise EngineError("privacy_unit='user' needs batches from the engine's loader")
            return torch.arange(size), size
        return unit_index, int(getattr(batch, "num_units", 0))

    def privatize_gradients(self, batch: Any, loss_fn: LossFn | None = None) -> StepResult:
        """Set every trainable ``p.grad`` to the noised, averaged clipped sum, and account.

        The hook point for trainers that own the optimizer step (e.g. a Hugging Face ``Trainer``):
        call this instead of ``loss.backward()``, then ``optimizer.step()``. Exactly one
        accountant step is recorded per call, even for an empty batch.
        """
        module, _, clipper, noise = self._require()
        self._privatised = None
        if loss_fn is None:
            if not isinstance(batch, Mapping):
                raise EngineError(
                    f"a {type(batch).__name__} batch needs loss_fn(model, batch) -> (B,) "
                    "per-example losses: the default causal-LM loss reads a dict with labels"
                )
            loss_fn = causal_lm_loss
        tensors = [v for v in batch_values(batch) if isinstance(v, Tensor) and v.dim() > 0]
        size = int(tensors[0].shape[0]) if tensors else 0
        unit_index, num_units = self._units(batch, size)
        clipper.reset()
        device = clipper.params[0].device  # batches come from the loader on the CPU
        unit_losses = torch.zeros(num_units, dtype=torch.float64)
        for start, stop in micro_batches(unit_index, self.max_physical_batch_size):
            micro = to_device(slice_batch(batch, start, stop, size), device)
            local = unit_index[start:stop] - unit_index[start]
            clipper.begin(stop - start)
            try:
                buffers = _buffer_versions(module)
                with self._forward_precision(device):
                    losses = loss_fn(module, micro)
                _refuse_changed_buffers(module, buffers)
                if losses.shape != (stop - start,):
                    raise EngineError(
                        f"loss_fn must return shape ({stop - start},), got "
                        f"{tuple(losses.shape)}"
                    )
                total = losses.sum()
                _refuse_foreign_leaves(total, self._trainable_ids)
                total.backward()  # type: ignore[no-untyped-call]
            finally:
                clipper.end()
            by_unit = None if self.privacy_unit == "example" else local.to(losses.device)
            with torch.autocast(losses.device.type, enabled=False):
                clipper.clip_and_accumulate(by_unit, int(local[-1]) + 1)
            per_unit = torch.zeros(int(local[-1]) + 1, dtype=torch.float64)
            per_unit.index_add_(0, local, losses.detach().double().cpu())
            counts = torch.bincount(local).double()
            unit_losses[unit_index[start] : unit_index[start] + len(counts)] = per_unit / counts
        self._add_noise_and_scale(clipper, noise)
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        self._privatised = {
            id(p): (p.grad, p.grad._version) for p in clipper.params if p.grad is not None
        }
        if self.data_parallel is not None:
            return self._global_result(unit_losses, size)
        loss = float(unit_losses.mean()) if num_units else math.nan
        return StepResult(loss=loss, num_units=num_units, num_examples=size)

    def _global_result(self, unit_losses: Tensor, size: int) -> StepResult:
        """The step's result over all ranks: mean loss of all sampled units, global counts."""
        if self.data_parallel is None:
            raise EngineError("not a data-parallel engine")
        device = self.data_parallel.control_device
        totals = torch.tensor(
            [float(unit_losses.sum()), unit_losses.numel(), size], dtype=torch.float64
        ).to(device)
        all_reduce_sum_([totals], self.data_parallel)
        loss_sum, num_units, num_examples = totals.tolist()
        loss = loss_sum / num_units if num_units else math.nan
        return StepResult(loss=loss, num_units=int(num_units), num_examples=int(num_examples))

    def _forward_precision(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """The engine's autocast, or nothing: never ``autocast(enabled=False)``, which would
        switch off an autocast the caller (e.g. a Hugging Face Trainer) opened around the step."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)

    def _add_noise_and_scale(self, clipper: GradClipper, noise: NoiseSource) -> None:
        """+ N(0, σ²C²) once, then ÷ q·N; data-parallel: rank 0 noises its share, then SUM."""
        std = self.noise_multiplier * self.max_grad_norm
        dp = self.data_parallel
        draws_noise = std > 0 and (dp is None or dp.rank == NOISE_RANK)
        with torch.no_grad():
            totals = [clipper.summed[p] for p in clipper.params]  # discarded below: in place
            if draws_noise:  # same order and shapes as single-process: same draws for a seed
                for total in totals:
                    total.add_(noise.gaussian(total, std=std))
            if dp is not None:
                all_reduce_sum_(totals, dp)
            for p, total in zip(clipper.params, totals, strict=True):
                p.grad = (total / self.expected_batch_size).to(p.dtype)
        clipper.summed = {}

    # -- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(
        self, path: str | os.PathLike[str], *, module: nn.Module, optimizer: torch.optim.Optimizer
    ) -> None:
        """Write model, optimizer, accountant, sampler and noise RNG state to ``path``."""
        save_engine_checkpoint(self, path, module=module, optimizer=optimizer)

    def load_checkpoint(
        self, path: str | os.PathLike[str], *, module: nn.Module, optimizer: torch.optim.Optimizer
    ) -> None:
        """Restore :meth:`save_checkpoint` into an engine set up with the same σ, C, q and unit.

        Raises:
            CheckpointError: missing file, or written by a run with other DP parameters.
        """
        load_engine_checkpoint(self, path, module=module, optimizer=optimizer)
        self._update_limit()

    @property
    def poisson_loader(self) -> PoissonDataLoader | None:
        """The engine's Poisson loader, or None when ``poisson_sampling=False``."""
        return self.data_loader if isinstance(self.data_loader, PoissonDataLoader) else None


# -- what the engine cannot clip ------------------------------------------------------------------
def _refuse_running_stats(module: nn.Module) -> None:
    """Refuse modules that keep running statistics (InstanceNorm/BatchNorm with
    ``track_running_stats``): they are updated from the whole batch in every training forward,
    unclipped and un-noised, and saved with the model."""
    for name, sub in module.named_modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            continue  # refused by the clipper, with the reason that applies to it
        tracked = getattr(sub, "running_mean", None) is not None
        if getattr(sub, "track_running_stats", False) and tracked:
            raise UnsupportedModuleError(
                f"{name or 'model'} ({type(sub).__name__}) tracks running statistics of the "
                "training data, which are released with the model without clipping or noise; "
                "use track_running_stats=False, GroupNorm or LayerNorm"
            )


def _refuse_foreign_optimizer_params(module: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every parameter the optimizer updates must be one the clipper can see."""
    held = {id(p) for p in module.parameters()}
    for g, group in enumerate(optimizer.param_groups):
        for i, p in enumerate(group["params"]):
            if id(p) not in held:
                raise EngineError(
                    f"optimizer parameter param_groups[{g}]['params'][{i}] (shape "
                    f"{tuple(p.shape)}) is not a parameter of the private module, so its "
                    "gradient could not be clipped per unit; register it on the module (or "
                    "leave it out of the optimizer)"
                )


def _buffer_versions(module: nn.Module) -> list[tuple[str, Tensor, int]]:
    return [(name, buf, buf._version) for name, buf in module.named_buffers()]


def _refuse_changed_buffers(module: nn.Module, before: list[tuple[str, Tensor, int]]) -> None:
    """A forward that writes a buffer stores data-dependent state that no clipping covers."""
    now = dict(module.named_buffers())
    for name, buf, version in before:
        if now.get(name) is not buf or buf._version != version:
            raise UnsupportedModuleError(
                f"buffer '{name}' changed during a training forward pass: it would carry "
                "unclipped, un-noised statistics of the batch into the saved model; freeze the "
                "module that updates it (eval mode) or remove the buffer"
            )
    if len(now) != len(before):
        raise UnsupportedModuleError(
            "a buffer was registered during a training forward pass (data-dependent state)"
        )


def _refuse_foreign_leaves(root: Tensor, allowed: frozenset[int]) -> None:
    """Before the backward: every leaf that would receive a gradient must be clipped.

    Walks the autograd graph of ``root`` (each node once); a leaf is an ``AccumulateGrad``
    node's ``variable``. A tensor outside the clipper (a parameter used only in ``loss_fn``, an
    input with ``requires_grad``) would receive the raw, unclipped sum of the batch.
    """
    start = root.grad_fn
    if start is None:
        return
    seen: set[Any] = set()
    stack = [start]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        leaf = getattr(node, "variable", None)
        if leaf is not None and id(leaf) not in allowed:
            raise EngineError(
                f"a tensor of shape {tuple(leaf.shape)} that is not a trainable parameter of "
                "the private module requires grad and would receive an unclipped gradient "
                "from this batch; make it a parameter of the module, or detach it"
            )
        stack.extend(child for child, _ in node.next_functions if child is not None)
