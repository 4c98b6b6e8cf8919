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
    promote,
)
from privacy_finetuner.errors import EngineError, UnsupportedModuleError

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

    def prefers_ghost(self, weight: Tensor) -> bool:
        """Whether to keep ``weight``'s per-example gradient factored (ghost) this micro-batch."""


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


def _tokens(t: Tensor) -> Tensor:
    """(B, ..., d) → (B, T, d) with T the product of the middle dimensions."""
    return t.reshape(t.shape[0], -1, t.shape[-1])


class _LinearFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, sink: Callable[..., None]
    ) -> Tensor:
        ctx.sink = sink
        ctx.save_for_backward(x, weight)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, None, None, None]:
        x, weight = ctx.saved_tensors
        ctx.sink(x, g)
        grad_x = (g @ weight.to(g.dtype)).to(x.dtype) if ctx.needs_input_grad[0] else None
        return grad_x, None, None, None


class _Conv1DFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, sink: Callable[..., None]
    ) -> Tensor:
        ctx.sink = sink
        ctx.save_for_backward(x, weight)
        out = torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight)
        return out.view(*x.shape[:-1], weight.shape[1])

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, None, None, None]:
        x, weight = ctx.saved_tensors
        ctx.sink(x, g)
        grad_x = (g @ weight.to(g.dtype).T).to(x.dtype) if ctx.needs_input_grad[0] else None
        return grad_x, None, None, None


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
        if weight.requires_grad:
            left, right = (xt, gt) if transposed else (gt, xt)
            factored = Factored(left=left, right=right)
            if col.prefers_ghost(weight):
                col.add(weight, factored, name=name)
            else:
                with torch.autocast(x.device.type, enabled=False):  # fp32 per-example grads
                    col.add(
                        weight,
                        Materialised(torch.einsum("btp,btd->bpd", promote(left), promote(right))),
                        name=name,
                    )
        if bias is not None and bias.requires_grad:
            col.add(bias, Materialised(promote(gt).sum(1)), name=name)

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
    """Norm-like (direct per-example grads) or vmap fallback rule, driven by module hooks."""

    def __init__(self, module: nn.Module, name: str, col: Collector, *, norm_like: bool) -> None:
        self.module, self.name, self.col = module, name, col
        self.norm_like = norm_like
        self.verified = not norm_like
        self.busy = False  # our own functional_call re-enters the forward hook
        self.handle = module.register_forward_hook(self._forward_hook)
        if not norm_like:
            self._warn_fallback()

    def _warn_fallback(self) -> None:
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
        if not self.verified:
            self._verify(args[0], out)
        inputs = tuple(a.detach() for a in args)
        out.register_hook(lambda g: self._on_grad(inputs, g))  # type: ignore[no-untyped-call]

    def _normalised(self, x: Tensor) -> Tensor:
        own = dict(self.module.named_parameters(recurse=False))
        unit = {"weight": torch.ones_like(own["weight"])}
        if "bias" in own:
            unit["bias"] = torch.zeros_like(own["bias"])
        with torch.no_grad():
            out = functional_call(self.module, unit, (x,))
        if not isinstance(out, Tensor):  # checked in the forward hook
            raise EngineError(f"{type(self.module).__name__} did not return a tensor")
        return out

    def _verify(self, x: Tensor, out: Tensor) -> None:
        """Check once, numerically, that the output is ``f(x) ⊙ weight + bias`` elementwise."""
        self.verified = True
        own = dict(self.module.named_parameters(recurse=False))
        ok = out.shape[-1] == own["weight"].shape[0]
        if ok:
            probe = {k: torch.randn_like(v) for k, v in own.items()}
            with torch.no_grad():
                got = functional_call(self.module, probe, (x,))
                want = self._normalised(x) * probe["weight"] + probe.get("bias", 0.0)
            ok = got.shape == want.shape and torch.allclose(got, want, rtol=1e-4, atol=1e-5)
        if not ok:
            self.norm_like = False
            self._warn_fallback()

    def _on_grad(self, inputs: tuple[Tensor, ...], g: Tensor) -> None:
        self.col.check_batch(g.shape[0], name=self.name)
        params = _trainable(self.module)
        if self.norm_like:
            gt = promote(_tokens(g))
            xhat = promote(_tokens(self._normalised(inputs[0])))
            for key, p in params.items():
                per_ex = (gt * xhat).sum(1) if key == "weight" else gt.sum(1)
                self.col.add(p, Materialised(per_ex), name=self.name)
            return
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


def attach_rule(module: nn.Module, name: str, col: Collector) -> tuple[Callable[[], None], str]:
    """Attach the cheapest exact rule for ``module``'s own trainable parameters.

    Returns:
        A callable that detaches the rule, and the rule's kind: "linear", "conv1d", "embedding"
        (patched, the weight gets no autograd gradient), "norm" or "vmap" (hook based).
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
    norm_like = _is_norm_like(module, params)
    rule = _HookRule(module, name, col, norm_like=norm_like)
    return rule.remove, "norm" if norm_like else "vmap"
