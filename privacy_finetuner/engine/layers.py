"""Per-layer rules: how each trainable module reports its per-example gradients to the clipper.

Linear, HF ``Conv1D`` and Embedding are *re-routed* through small autograd functions whose backward
computes only the input gradient and hands the (activation, output-gradient) pair to the clipper.
Autograd therefore never computes the summed weight gradient that DP-SGD would throw away; the
clipper builds the clipped sum itself from the same pair (book-keeping, Bu et al. 2023), so the
whole step needs one backward pass and roughly the FLOPs of a non-private one.

Norm layers (LayerNorm, RMSNorm and anything that *behaves* like ``f(x) ⊙ weight + bias``) and
modules without a rule use hooks: forward hook for the input, a tensor hook on the output for the
gradient; their per-example gradients are materialised (small for norms, vmap for the rest).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from privacy_finetuner.engine.contributions import (
    Contribution,
    Factored,
    Indexed,
    Materialised,
    factored_sq_norms,
    per_example_grads,
    promote,
)
from privacy_finetuner.engine.plan import MATERIALISE, NORM_ONLY
from privacy_finetuner.errors import UnsupportedModuleError

__all__ = ["Collector", "attach_rule", "refuse_unsupported"]


def _conv1d_types() -> tuple[type[nn.Module], ...]:
    """transformers' ``Conv1D`` (GPT-2) if transformers is installed; it is optional."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - exercised only without transformers
        return ()
    return (Conv1D,)


_CONV1D_TYPES = _conv1d_types()

_MIXING_MODULES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm,)


class Collector(Protocol):
    """What a layer rule reports to (implemented by :class:`~.clipper.GradClipper`)."""

    @property
    def active(self) -> bool:
        """True while a DP micro-batch is being processed."""

    def add(self, param: Tensor, contribution: Contribution, *, name: str) -> None:
        """Record one use of ``param`` in the current micro-batch."""

    @property
    def batch_size(self) -> int:
        """Examples in the current micro-batch."""

    def check_batch(self, size: int, *, name: str) -> None:
        """Raise if a layer sees a leading dimension that is not the micro-batch."""

    def plan_mode(self, weight: Tensor, tokens: int, dtype: torch.dtype) -> str:
        """The plan's rule for ``weight`` this micro-batch: "ghost", "materialise", "norm_only"."""

    def release(self, param: Tensor) -> None:
        """``param`` turned out to need the vmap fallback: autograd computes its gradient."""


def refuse_unsupported(module: nn.Module) -> None:
    """Raise for modules that mix examples in the forward pass (per-example clipping breaks).

    Raises:
        UnsupportedModuleError: a BatchNorm (or subclass) is present and not frozen in eval mode.
    """
    for name, sub in module.named_modules():
        if isinstance(sub, _MIXING_MODULES):
            raise UnsupportedModuleError(
                f"{name or 'model'} ({type(sub).__name__}) mixes examples of a batch through its "
                "batch statistics, so per-example clipping would not bound any one example's "
                "influence; replace it with GroupNorm/LayerNorm"
            )


def _trainable(module: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in module.named_parameters(recurse=False) if p.requires_grad}


def _acc(t: Tensor) -> torch.dtype:
    """fp32 accumulation for half inputs, the input dtype otherwise (fp64 stays fp64)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _tokens(t: Tensor) -> Tensor:
    """(B, ..., d) → (B, T, d) with T the product of the middle dimensions."""
    return t.reshape(t.shape[0], -1, t.shape[-1])


def _no_autocast(t: Tensor) -> contextlib.AbstractContextManager[Any]:
    """Autocast off for the per-example arithmetic (meta tensors have no autocast to switch)."""
    if t.device.type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(t.device.type, enabled=False)


def _autocast_inputs(x: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """``x`` and ``weight`` in the autocast dtype if autocast is on: the casts the matmul would
    make anyway, so saving them (not the wider originals) keeps the saved activations as small as
    the non-private ones and the backward needs no second cast of the weight."""
    device = x.device.type
    if device == "meta" or not x.is_floating_point() or not torch.is_autocast_enabled(device):
        return x, weight
    dtype = torch.get_autocast_dtype(device)
    return x.to(dtype), weight.to(dtype)


class _LinearFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, sink: Callable[..., None]
    ) -> Tensor:
        ctx.sink = sink
        ctx.x_dtype = x.dtype
        x, weight = _autocast_inputs(x, weight)
        ctx.save_for_backward(x, weight)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, None, None, None]:
        x, weight = ctx.saved_tensors
        ctx.sink(x, g)
        grad_x = (g @ weight.to(g.dtype)).to(ctx.x_dtype) if ctx.needs_input_grad[0] else None
        return grad_x, None, None, None


class _Conv1DFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, sink: Callable[..., None]
    ) -> Tensor:
        ctx.sink = sink
        ctx.x_dtype = x.dtype
        x, weight = _autocast_inputs(x, weight)
        ctx.save_for_backward(x, weight)
        out = torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight)
        return out.view(*x.shape[:-1], weight.shape[1])

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, None, None, None]:
        x, weight = ctx.saved_tensors
        ctx.sink(x, g)
        grad_x = (g @ weight.to(g.dtype).T).to(ctx.x_dtype) if ctx.needs_input_grad[0] else None
        return grad_x, None, None, None


class _AffineFn(torch.autograd.Function):
    """``x̂ ⊙ w + b`` whose backward gives only the input gradient (no throw-away ∂w, ∂b)."""

    @staticmethod
    def forward(
        ctx: Any, xhat: Tensor, weight: Tensor, bias: Tensor | None, sink: Callable[..., None]
    ) -> Tensor:
        ctx.sink = sink
        ctx.save_for_backward(xhat, weight)
        out = xhat * weight
        return out + bias if bias is not None else out

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, None, None, None]:
        xhat, weight = ctx.saved_tensors
        ctx.sink(xhat, g)
        grad = (g * weight).to(xhat.dtype) if ctx.needs_input_grad[0] else None
        return grad, None, None, None


class _EmbeddingFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, ids: Tensor, weight: Tensor, padding_idx: int | None, sink: Callable[..., None]
    ) -> Tensor:
        ctx.sink = sink
        ctx.save_for_backward(ids)
        return F.embedding(ids, weight, padding_idx)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[None, None, None, None]:
        (ids,) = ctx.saved_tensors
        ctx.sink(ids, g)
        return None, None, None, None


def _linear_sink(
    module: nn.Module, name: str, col: Collector, *, transposed: bool
) -> Callable[[Tensor, Tensor], None]:
    """Turn (x, g) into contributions; ``transposed`` for HF Conv1D whose weight is (in, out)."""

    def sink(x: Tensor, g: Tensor) -> None:
        col.check_batch(x.shape[0], name=name)
        xt, gt = _tokens(x), _tokens(g)
        weight: Tensor = module.weight  # type: ignore[assignment]
        bias: Tensor | None = module.bias  # type: ignore[assignment]
        with _no_autocast(x):
            if weight.requires_grad:
                left, right = (xt, gt) if transposed else (gt, xt)
                mode = col.plan_mode(weight, xt.shape[1], left.dtype)
                contribution: Contribution
                if mode == MATERIALISE:
                    contribution = Materialised(per_example_grads(left, right))
                elif mode == NORM_ONLY:
                    contribution = Factored(left, right, sq=factored_sq_norms(left, right))
                else:
                    contribution = Factored(left=left, right=right)
                col.add(weight, contribution, name=name)
            if bias is not None and bias.requires_grad:
                col.add(bias, Materialised(gt.sum(1, dtype=_acc(gt))), name=name)

    return sink


def _embedding_sink(module: nn.Embedding, name: str, col: Collector) -> Callable[..., None]:
    def sink(ids: Tensor, g: Tensor) -> None:
        col.check_batch(ids.shape[0], name=name)
        flat_ids = ids.reshape(ids.shape[0], -1)
        gt = _tokens(g)
        if module.padding_idx is not None:  # the padding row never receives gradient
            gt = gt * (flat_ids != module.padding_idx)[:, :, None].to(gt.dtype)
        col.add(
            module.weight, Indexed(index=flat_ids, right=gt, rows=module.num_embeddings), name=name
        )

    return sink


def _patch(module: nn.Module, forward: Callable[..., Tensor]) -> Callable[[], None]:
    module.forward = forward

    def restore() -> None:
        del module.forward

    return restore


def _patch_linear(module: nn.Linear, name: str, col: Collector) -> Callable[[], None]:
    original = module.forward
    sink = _linear_sink(module, name, col, transposed=False)

    def forward(x: Tensor) -> Tensor:
        if not (col.active and torch.is_grad_enabled()):
            return original(x)
        out: Tensor = _LinearFn.apply(  # type: ignore[no-untyped-call]
            x, module.weight, module.bias, sink
        )
        return out

    return _patch(module, forward)


def _patch_conv1d(module: nn.Module, name: str, col: Collector) -> Callable[[], None]:
    original = module.forward
    sink = _linear_sink(module, name, col, transposed=True)

    def forward(x: Tensor) -> Tensor:
        if not (col.active and torch.is_grad_enabled()):
            return original(x)  # type: ignore[no-any-return]
        out: Tensor = _Conv1DFn.apply(  # type: ignore[no-untyped-call]
            x, module.weight, module.bias, sink
        )
        return out

    return _patch(module, forward)


def _patch_embedding(module: nn.Embedding, name: str, col: Collector) -> Callable[[], None]:
    original = module.forward
    sink = _embedding_sink(module, name, col)

    def forward(ids: Tensor) -> Tensor:
        if not (col.active and torch.is_grad_enabled()):
            return original(ids)
        if ids.dim() > 1 and ids.shape[0] == 1 and col.batch_size > 1:
            # Shared ids (GPT-2's position_ids are (1, T)): the output would be broadcast over
            # the batch and its gradient summed over examples; expand so each example has its own.
            ids = ids.expand(col.batch_size, *ids.shape[1:])
        out: Tensor = _EmbeddingFn.apply(  # type: ignore[no-untyped-call]
            ids, module.weight, module.padding_idx, sink
        )
        return out

    return _patch(module, forward)


def _is_norm_like(module: nn.Module, params: dict[str, nn.Parameter]) -> bool:
    """A leaf whose own parameters are ``weight`` (d,) and optionally ``bias`` (d,)."""
    own = dict(module.named_parameters(recurse=False))
    if next(module.children(), None) is not None or "weight" not in own:
        return False
    if set(own) - {"weight", "bias"} or own["weight"].dim() != 1:
        return False
    return all(p.shape == own["weight"].shape for p in own.values()) and bool(params)


class _HookRule:
    """The vmap fallback: forward hook for the inputs, a tensor hook on the output's gradient.

    Autograd also computes this module's summed parameter gradient, which the clipper discards.
    """

    def __init__(self, module: nn.Module, name: str, col: Collector) -> None:
        self.module, self.name, self.col = module, name, col
        self.busy = False  # our own functional_call re-enters the forward hook
        self.handle = module.register_forward_hook(self._forward_hook)
        warnings.warn(
            f"no fast per-example gradient rule for module '{self.name}' "
            f"({type(self.module).__name__}); using torch.func vmap per-example gradients "
            "for it, which is slower and uses more memory",
            stacklevel=4,
        )

    def remove(self) -> None:
        self.handle.remove()

    def _forward_hook(self, module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        if self.busy or not (self.col.active and torch.is_grad_enabled()):
            return
        if not isinstance(out, Tensor) or not all(isinstance(a, Tensor) for a in args):
            raise UnsupportedModuleError(
                f"module '{self.name}' ({type(module).__name__}) has trainable parameters but no "
                "per-example rule, and its inputs/outputs are not plain tensors for the vmap "
                "fallback; freeze it or wrap it"
            )
        if not out.requires_grad:
            return
        inputs = tuple(a.detach() for a in args)
        out.register_hook(lambda g: self._on_grad(inputs, g))  # type: ignore[no-untyped-call]

    def _on_grad(self, inputs: tuple[Tensor, ...], g: Tensor) -> None:
        self.col.check_batch(g.shape[0], name=self.name)
        params = _trainable(self.module)
        detached = {k: p.detach() for k, p in params.items()}

        def loss(ps: dict[str, Tensor], g_i: Tensor, *xs: Tensor) -> Tensor:
            out = functional_call(self.module, ps, tuple(x.unsqueeze(0) for x in xs))
            total: Tensor = (out * g_i.unsqueeze(0)).sum()
            return total

        self.busy = True
        try:
            with torch.enable_grad():
                per_ex = vmap(grad(loss), in_dims=(None, 0, *([0] * len(inputs))))(
                    detached, g.detach(), *inputs
                )
        finally:
            self.busy = False
        for key, p in params.items():
            self.col.add(p, Materialised(per_ex[key]), name=self.name)


class _NormRule:
    """``f(x) ⊙ w + b`` layers (LayerNorm, RMSNorm, look-alikes) re-routed through _AffineFn.

    The forward computes x̂ = f(x) (the module with unit weight and zero bias, or F.layer_norm /
    F.rms_norm for torch's own) and then x̂ ⊙ w + b in a function whose backward returns only the
    input gradient, so autograd never computes a throw-away ∂w and a use of ``w`` outside the
    module is visible (it gets an autograd gradient) and refused. Look-alikes are checked
    numerically once; one that fails falls back to vmap with a warning.
    """

    def __init__(self, module: nn.Module, name: str, col: Collector) -> None:
        self.module, self.name, self.col = module, name, col
        self.known = isinstance(module, (nn.LayerNorm, nn.RMSNorm))
        self.verified = self.known
        self.busy = False
        self.fallback: _HookRule | None = None
        self.original = module.forward
        self.restore = _patch(module, self._forward)
        self.pre = module.register_forward_pre_hook(self._pre_hook)
        self._units: dict[tuple[torch.dtype, torch.device], dict[str, Tensor]] = {}
        self.sink = self._make_sink()

    def remove(self) -> None:
        self.pre.remove()
        self.restore()
        if self.fallback is not None:
            self.fallback.remove()

    def _live(self) -> bool:
        return self.col.active and torch.is_grad_enabled() and not self.busy

    def _pre_hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self.verified or not self._live():
            return
        self.verified = True
        if not (len(args) == 1 and isinstance(args[0], Tensor) and self._behaves(args[0])):
            for p in _trainable(module).values():
                self.col.release(p)
            self.fallback = _HookRule(module, self.name, self.col)  # fires for this call too

    def _forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.fallback is not None or not self._live() or kwargs or len(args) != 1:
            return self.original(*args, **kwargs)
        x = args[0]
        own = _trainable(self.module)
        out: Tensor = _AffineFn.apply(  # type: ignore[no-untyped-call]
            self._normalised(x), self.module.weight, own.get("bias"), self.sink
        )
        frozen_bias = getattr(self.module, "bias", None)
        if "bias" not in own and isinstance(frozen_bias, Tensor):
            out = out + frozen_bias
        return out

    def _normalised(self, x: Tensor) -> Tensor:
        """f(x), differentiable in x only."""
        mod = self.module
        if isinstance(mod, nn.LayerNorm):
            return F.layer_norm(x, mod.normalized_shape, None, None, mod.eps)
        if isinstance(mod, nn.RMSNorm):
            return F.rms_norm(x, mod.normalized_shape, None, mod.eps)
        weight: Tensor = mod.weight  # type: ignore[assignment]
        key = (weight.dtype, weight.device)
        if key not in self._units:
            unit = {"weight": torch.ones_like(weight)}
            if isinstance(getattr(mod, "bias", None), Tensor):
                unit["bias"] = torch.zeros_like(weight)
            self._units[key] = unit
        self.busy = True
        try:
            out = functional_call(mod, self._units[key], (x,))
        finally:
            self.busy = False
        if not isinstance(out, Tensor):
            raise UnsupportedModuleError(f"{type(mod).__name__} did not return a tensor")
        return out

    def _behaves(self, x: Tensor) -> bool:
        """Check once, numerically, that the output is ``f(x) ⊙ weight + bias`` elementwise."""
        if x.device.type == "meta":  # shape-only runs (FLOP counting) have no numbers to check
            return True
        own = dict(self.module.named_parameters(recurse=False))
        probe = {k: torch.randn_like(v) for k, v in own.items()}
        self.busy = True
        try:
            with torch.no_grad():
                got = functional_call(self.module, probe, (x,))
        finally:
            self.busy = False
        if not isinstance(got, Tensor) or got.shape[-1:] != own["weight"].shape:
            return False
        with torch.no_grad():
            want = self._normalised(x) * probe["weight"] + probe.get("bias", 0.0)
        return got.shape == want.shape and torch.allclose(got, want, rtol=1e-4, atol=1e-5)

    def _make_sink(self) -> Callable[[Tensor, Tensor], None]:
        def sink(xhat: Tensor, g: Tensor) -> None:
            self.col.check_batch(g.shape[0], name=self.name)
            with _no_autocast(g):
                gt = promote(_tokens(g))
                for key, p in _trainable(self.module).items():
                    per_ex = (gt * promote(_tokens(xhat))).sum(1) if key == "weight" else gt.sum(1)
                    self.col.add(p, Materialised(per_ex), name=self.name)

        return sink


def attach_rule(module: nn.Module, name: str, col: Collector) -> tuple[Callable[[], None], str]:
    """Attach the cheapest exact rule for ``module``'s own trainable parameters.

    Returns:
        A callable that detaches the rule, and the rule's kind: "linear", "conv1d", "embedding",
        "norm" (patched: the parameters get no autograd gradient) or "vmap" (hook based).
    """
    params = _trainable(module)
    if isinstance(module, nn.Linear):
        return _patch_linear(module, name, col), "linear"
    if isinstance(module, _CONV1D_TYPES):
        return _patch_conv1d(module, name, col), "conv1d"
    if (
        isinstance(module, nn.Embedding)
        and module.max_norm is None
        and not module.scale_grad_by_freq
        and not module.sparse
    ):
        return _patch_embedding(module, name, col), "embedding"
    if _is_norm_like(module, params):
        return _NormRule(module, name, col).remove, "norm"
    return _HookRule(module, name, col).remove, "vmap"
