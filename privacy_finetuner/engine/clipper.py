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
    clipped_sum,
    gram,
    materialise,
)
from privacy_finetuner.engine.layers import attach_rule, refuse_unsupported
from privacy_finetuner.errors import EngineError, UnsupportedModuleError

__all__ = ["GradClipper"]

logger = logging.getLogger(__name__)

_PATCHED_KINDS = frozenset({"linear", "conv1d", "embedding"})


class GradClipper:
    """Attaches per-layer rules to ``module`` and accumulates clipped per-unit gradient sums.

    Args:
        module: the model; every parameter with ``requires_grad`` is privatised, frozen ones cost
            nothing.
        max_grad_norm: C, the clip norm of one unit's whole gradient.
        materialize_budget_mb: memory for materialised per-example weight gradients per
            micro-batch. Materialising a (p × d) weight over T tokens costs O(T·p·d) once and
            makes its clipped sum nearly free; the ghost norm costs O(T²(p+d)) *plus* an
            O(T·p·d) clipped sum but only O(T·(p+d)) memory. So materialising is always cheaper
            in compute and only memory limits it: weights are materialised in order of the
            compute they save per byte, (p+d)/(p·d), until ``B · Σ numel · 4`` bytes exceed the
            budget; the rest use the ghost norm.
    """

    def __init__(
        self, module: nn.Module, *, max_grad_norm: float, materialize_budget_mb: float = 256.0
    ) -> None:
        refuse_unsupported(module)
        self.module = module
        self.max_grad_norm = max_grad_norm
        self.materialize_budget_mb = materialize_budget_mb
        self._ghost: set[Tensor] = set()
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
        self._ranked = self._rank_weights(module)
        wide = any(p.dtype == torch.float64 for p in self.params)
        self.acc_dtype = torch.float64 if wide else torch.float32
        self.summed: dict[Tensor, Tensor] = {}
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

    def prefers_ghost(self, weight: Tensor) -> bool:
        """Whether ``weight`` stays factored (ghost norm) in this micro-batch's plan."""
        return weight in self._ghost

    def _rank_weights(self, module: nn.Module) -> list[tuple[Tensor, int]]:
        """Linear/Conv1D weights by compute saved per byte if materialised, best first.

        Each entry is (weight, bytes per example); a tied weight counts once per use, because
        materialising one use forces materialising the other (see :meth:`_merged`).
        """
        uses: dict[Tensor, int] = {}
        for sub in module.modules():
            for p in sub.parameters(recurse=False):
                if p.requires_grad:
                    uses[p] = uses.get(p, 0) + 1
        ranked: list[tuple[float, Tensor, int]] = []
        seen: set[Tensor] = set()
        for name, sub in module.named_modules():
            weight = getattr(sub, "weight", None)
            if self.kinds.get(name) not in ("linear", "conv1d") or weight in seen:
                continue
            if not isinstance(weight, Tensor) or not weight.requires_grad:
                continue
            seen.add(weight)
            rows, cols = weight.shape
            score = (rows + cols) / (rows * cols)
            ranked.append((score, weight, 4 * weight.numel() * uses[weight]))
        ranked.sort(key=lambda item: -item[0])
        return [(w, size) for _, w, size in ranked]

    def _plan(self, batch_size: int) -> None:
        budget = self.materialize_budget_mb * 2**20
        used = 0.0
        self._ghost = set()
        for weight, size in self._ranked:
            if used + batch_size * size <= budget:
                used += batch_size * size
            else:
                self._ghost.add(weight)

    # -- micro-batch lifecycle ----------------------------------------------------------------
    def begin(self, batch_size: int) -> None:
        """Start collecting for a micro-batch of ``batch_size`` examples."""
        self._contribs.clear()
        self._batch_size = batch_size
        self._plan(batch_size)
        self._active = True

    def end(self) -> None:
        """Stop collecting (also after an error, so later plain forwards stay plain)."""
        self._active = False

    def reset(self) -> None:
        """Drop the accumulated clipped sums (start of a logical step)."""
        self.summed = {p: torch.zeros_like(p, dtype=self.acc_dtype) for p in self.params}

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

        Args:
            unit_index: (B,) long, example → unit in ``0..num_units-1``; None means each
                example is its own unit.
            num_units: number of units in the micro-batch.

        Returns:
            (num_units,) fp32 gradient norms before clipping (for diagnostics and tests).
        """
        self._check_coverage()
        for p in self.params:
            p.grad = None  # hook-based rules let autograd sum too; that sum is not private
        merged = self._merged()
        full = unit_index is not None
        device = self.params[0].device
        shape = (self._batch_size, self._batch_size) if full else (self._batch_size,)
        sq = torch.zeros(shape, device=device, dtype=self.acc_dtype)
        for uses in merged.values():
            for i, a in enumerate(uses):
                for j in range(i, len(uses)):
                    k = gram(a, uses[j], full=full).to(self.acc_dtype)
                    if i != j:  # ⟨Ga, Gb⟩ + ⟨Gb, Ga⟩ for the two uses of a tied tensor
                        k = k + k.T if full else 2 * k
                    sq = sq + k
        if unit_index is None:
            unit_sq = sq
            per_example = None
        else:
            onehot = torch.zeros(num_units, self._batch_size, device=device, dtype=self.acc_dtype)
            onehot[unit_index, torch.arange(self._batch_size, device=device)] = 1.0
            unit_sq = ((onehot @ sq) * onehot).sum(1)
            per_example = unit_index
        norms = unit_sq.clamp_min(0.0).sqrt()
        factor = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        coef = factor if per_example is None else factor[per_example]
        for p, uses in merged.items():
            for use in uses:
                self.summed[p] += clipped_sum(use, coef, p.shape).to(self.acc_dtype)
        self._contribs.clear()
        return norms
