"""Per-unit clipping and the clipped-sum accumulator for one model.

One micro-batch is one forward and one backward of Σᵢ lossᵢ (a *sum*, so each example's output
gradient is its own, with no 1/B to undo). During that backward every layer rule reports its
contributions (see :mod:`.contributions`); afterwards :meth:`GradClipper.clip_and_accumulate`
computes each unit's squared gradient norm over *all* trainable parameters together, the clip
factors ``cᵤ = min(1, C / (‖Gᵤ‖ + 1e-6))`` in fp32, and adds ``Σᵢ c_{u(i)} Gᵢ`` to fp32 buffers.

A unit is an example (``privacy_unit="example"``) or a user; a user's gradient is the sum over its
examples, so its squared norm needs the cross terms ``⟨Gᵢ, Gⱼ⟩`` of its examples: we then compute
the full (B, B) Gram matrix and sum it over each user's block. All of a unit's examples must be in
the same micro-batch (the engine packs micro-batches that way).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor, nn

from privacy_finetuner.engine.contributions import (
    Contribution,
    Materialised,
    accumulate_clipped_sum,
    gram,
    materialise,
)
from privacy_finetuner.engine.layers import attach_rule, refuse_unsupported
from privacy_finetuner.engine.plan import GHOST, LayerPlan, WeightSpec, describe, plan_weights
from privacy_finetuner.errors import EngineError, UnsupportedModuleError

__all__ = ["GradClipper"]

logger = logging.getLogger(__name__)

_PATCHED_KINDS = frozenset({"linear", "conv1d", "embedding", "norm"})
_LOW = (torch.bfloat16, torch.float16)
# fp32 / bf16 matmul time on a CPU (measured 3.5 with AMX): the cost of exact products there.
CPU_EXACT_PENALTY = 3.0
_CPU_BUDGET_MB = 256.0


class _LazySums(dict[Tensor, Tensor]):
    """Clipped-sum accumulators created on first use: no zero-filled buffers at step start, and a
    parameter nobody touched (or a caller reading all of them) gets zeros only when asked."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def __missing__(self, param: Tensor) -> Tensor:
        zeros = torch.zeros_like(param, dtype=self.dtype)
        self[param] = zeros
        return zeros


class GradClipper:
    """Attaches per-layer rules to ``module`` and accumulates clipped per-unit gradient sums.

    Args:
        module: the model; every parameter with ``requires_grad`` is privatised, frozen ones cost
            nothing.
        max_grad_norm: C, the clip norm of one unit's whole gradient.
        materialize_budget_mb: memory for per-example weight gradients held during one
            micro-batch (see :mod:`.plan`); None: on CUDA an eighth of the memory in use when
            the plan is made (at most a quarter of the free memory), 256 MiB elsewhere.

    Attributes:
        skipped: units skipped because their gradient norm was not finite (a device tensor,
            so counting them costs no host sync; read :attr:`skipped_units`).
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        max_grad_norm: float,
        materialize_budget_mb: float | None = None,
    ) -> None:
        refuse_unsupported(module)
        self.module = module
        self.max_grad_norm = max_grad_norm
        self.materialize_budget_mb = materialize_budget_mb
        self._plans: dict[tuple[object, ...], dict[Tensor, LayerPlan]] = {}
        self._active = False
        self._batch_size = 0
        self._contribs: dict[Tensor, list[Contribution]] = {}
        self._detach: list[Callable[[], None]] = []
        self.kinds: dict[str, str] = {}
        self.params: list[Tensor] = [p for p in module.parameters() if p.requires_grad]
        self._patched: set[Tensor] = set()
        for name, sub in module.named_modules():
            if not any(p.requires_grad for p in sub.parameters(recurse=False)):
                continue
            detach, kind = attach_rule(sub, name, self)
            self._detach.append(detach)
            self.kinds[name] = kind
            if kind in _PATCHED_KINDS:
                self._patched.update(p for p in sub.parameters(recurse=False) if p.requires_grad)
        if not self.params:
            raise EngineError("the model has no trainable parameters to privatise")
        self._specs, self._names = self._weight_specs(module)
        wide = any(p.dtype == torch.float64 for p in self.params)
        self.acc_dtype = torch.float64 if wide else torch.float32
        self.summed: dict[Tensor, Tensor] = _LazySums(self.acc_dtype)
        self.skipped = torch.zeros((), dtype=torch.long, device=self.params[0].device)
        logger.debug("per-example rules: %s", self.kinds)

    # -- Collector protocol -------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """True while a DP micro-batch is being processed."""
        return self._active

    def add(self, param: Tensor, contribution: Contribution, *, name: str) -> None:
        """Record one use of ``param`` in the current micro-batch."""
        self._contribs.setdefault(param, []).append(contribution)

    @property
    def batch_size(self) -> int:
        """Examples in the current micro-batch."""
        return self._batch_size

    def check_batch(self, size: int, *, name: str) -> None:
        """Refuse layers whose leading dimension is not the micro-batch (examples would mix)."""
        if size != self._batch_size:
            raise UnsupportedModuleError(
                f"module '{name}' saw a leading dimension {size} but the micro-batch has "
                f"{self._batch_size} examples; per-example rules need batch-first inputs"
            )

    def release(self, param: Tensor) -> None:
        """``param``'s rule fell back to hooks: its autograd gradient is expected (discarded)."""
        self._patched.discard(param)

    def plan_mode(self, weight: Tensor, tokens: int, dtype: torch.dtype) -> str:
        """The plan's mode for ``weight`` at this micro-batch's shape, planned once per shape."""
        penalty = CPU_EXACT_PENALTY if dtype in _LOW and weight.device.type == "cpu" else 1.0
        budget = self._budget_bytes(weight.device)
        key = (self._batch_size, tokens, penalty, budget)
        plans = self._plans.get(key)
        if plans is None:
            plans = plan_weights(
                self._specs,
                batch=self._batch_size,
                tokens=tokens,
                budget_bytes=budget,
                exact_penalty=penalty,
            )
            self._plans[key] = plans
            logger.info(
                "DP plan for %d examples x %d tokens (budget %.0f MiB): %s",
                self._batch_size,
                tokens,
                budget / 2**20,
                describe(plans, self._names),
            )
        plan = plans.get(weight)
        return plan.mode if plan is not None else GHOST

    def _budget_bytes(self, device: torch.device) -> float:
        if self.materialize_budget_mb is not None:
            return self.materialize_budget_mb * 2**20
        if device.type == "cuda":  # at most 1/8 of what is in use (≈ +12% memory), if free
            free, _ = torch.cuda.mem_get_info(device)
            return min(free / 4, max(torch.cuda.memory_allocated(device), 2**30) / 8)
        return _CPU_BUDGET_MB * 2**20

    @property
    def plans(self) -> dict[tuple[object, ...], dict[Tensor, LayerPlan]]:
        """Every plan made so far, by (batch, tokens, exact penalty, budget bytes)."""
        return self._plans

    @property
    def skipped_units(self) -> int:
        """Units skipped so far for a non-finite gradient norm (reads the device counter)."""
        return int(self.skipped)

    def _weight_specs(
        self, module: nn.Module
    ) -> tuple[list[WeightSpec[Tensor]], dict[Tensor, str]]:
        """Linear/Conv1D weights with their (p × d) shapes and uses (a tied weight has two)."""
        uses: dict[Tensor, int] = {}
        for sub in module.modules():
            for p in sub.parameters(recurse=False):
                if p.requires_grad:
                    uses[p] = uses.get(p, 0) + 1
        specs: list[WeightSpec[Tensor]] = []
        names: dict[Tensor, str] = {}
        for name, sub in module.named_modules():
            weight = getattr(sub, "weight", None)
            if self.kinds.get(name) not in ("linear", "conv1d") or weight in names:
                continue
            if not isinstance(weight, Tensor) or not weight.requires_grad:
                continue
            names[weight] = name
            rows, cols = weight.shape
            specs.append(WeightSpec(weight, int(rows), int(cols), uses[weight]))
        return specs, names

    # -- micro-batch lifecycle ----------------------------------------------------------------
    def begin(self, batch_size: int) -> None:
        """Start collecting for a micro-batch of ``batch_size`` examples."""
        self._contribs.clear()
        self._batch_size = batch_size
        self._active = True

    def end(self) -> None:
        """Stop collecting (also after an error, so later plain forwards stay plain)."""
        self._active = False

    def reset(self) -> None:
        """Drop the accumulated clipped sums (start of a logical step)."""
        self.summed = _LazySums(self.acc_dtype)

    def detach(self) -> None:
        """Remove every rule; the model behaves exactly as before :class:`GradClipper`."""
        for fn in self._detach:
            fn()
        self._detach.clear()

    def _merged(self) -> dict[Tensor, list[Contribution]]:
        """Per parameter, its uses; tied parameters with a materialised use are summed once."""
        merged: dict[Tensor, list[Contribution]] = {}
        for p, uses in self._contribs.items():
            if len(uses) > 1 and any(isinstance(u, Materialised) for u in uses):
                total = materialise(uses[0])
                for u in uses[1:]:
                    total = total + materialise(u)
                merged[p] = [Materialised(total)]
            else:
                merged[p] = uses
        return merged

    def _check_coverage(self) -> None:
        for p in self._patched:
            if p.grad is not None:
                raise EngineError(
                    "a parameter handled by a per-example rule also received a plain autograd "
                    "gradient: it is used outside its module (e.g. F.linear(x, layer.weight)); "
                    "such use cannot be clipped per example"
                )

    def clip_and_accumulate(self, unit_index: Tensor | None, num_units: int) -> Tensor:
        """Clip the current micro-batch's units and add their clipped sum to :attr:`summed`.

        A unit whose norm is not finite (an overflow or NaN in its forward) is skipped: clip
        factor 0 and its inputs zeroed, counted in :attr:`skipped`, so the step never turns NaN.
        Nothing here waits for the device.

        Args:
            unit_index: (B,) long, example → unit in ``0..num_units-1``; None means each
                example is its own unit.
            num_units: number of units in the micro-batch.

        Returns:
            (num_units,) fp32 gradient norms before clipping (for diagnostics and tests).
        """
        self._check_coverage()
        for p in self.params:
            if p not in self._patched:
                p.grad = None  # hook-based rules let autograd sum too; that sum is not private
        merged = self._merged()
        full = unit_index is not None
        device = self.params[0].device
        sq: Tensor | None = None
        for uses in merged.values():
            for i, a in enumerate(uses):
                for j in range(i, len(uses)):
                    k = gram(a, uses[j], full=full).to(self.acc_dtype)
                    if i != j:  # ⟨Ga, Gb⟩ + ⟨Gb, Ga⟩ for the two uses of a tied tensor
                        k = k + k.T if full else 2 * k
                    sq = k if sq is None else sq + k
        if sq is None:
            shape = (self._batch_size, self._batch_size) if full else (self._batch_size,)
            sq = torch.zeros(shape, device=device, dtype=self.acc_dtype)
        if unit_index is None:
            unit_sq = sq
        else:
            unit_index = unit_index.to(device)
            same = unit_index[:, None] == unit_index[None, :]
            unit_sq = torch.zeros(num_units, device=device, dtype=self.acc_dtype)
            unit_sq.index_add_(0, unit_index, torch.where(same, sq, 0).sum(1))
        norms = unit_sq.clamp_min(0.0).sqrt()
        finite = torch.isfinite(norms)
        factor = torch.where(finite, (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0), 0.0)
        self.skipped += (~finite).sum()  # counted on the device: no host sync
        coef = factor if unit_index is None else factor[unit_index]
        drop = ~(finite if unit_index is None else finite[unit_index])
        for p, uses in merged.items():
            for use in uses:
                self.summed[p] = accumulate_clipped_sum(
                    use, coef, self.summed.get(p), p.shape, acc_dtype=self.acc_dtype, drop=drop
                )
        self._contribs.clear()
        return norms
