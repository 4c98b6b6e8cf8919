"""Per-example gradient *representations* and the algebra the clipper needs on them.

A trainable tensor's per-example gradient Gᵢ is rarely materialised. Layers hand the clipper one
of three representations per use of a parameter (a parameter tied between two modules has two
uses, and its per-example gradient is the *sum* of both):

* :class:`Factored` — ``Gᵢ = Σₜ leftᵢₜ ⊗ rightᵢₜ`` (a Linear: output grad ⊗ input activation);
* :class:`Indexed` — ``Gᵢ = Σₜ e_{indexᵢₜ} ⊗ rightᵢₜ`` (an Embedding: one-hot rows ⊗ output grad);
* :class:`Materialised` — ``Gᵢ`` itself, shape ``(B, *param.shape)`` (norm weights, biases, vmap).

Everything the clipper asks is bilinear in these: the Gram entries ``⟨G¹ᵢ, G²ⱼ⟩`` (the diagonal for
per-example norms, the full matrix for per-user norms, where a user's gradient is the sum over its
examples) and the clipped sum ``Σᵢ cᵢ Gᵢ``. The Gram of factored forms is the "ghost norm" of
Li et al. (2022): ``Σₜ,ₛ (leftᵢₜ·leftⱼₛ)(rightᵢₜ·rightⱼₛ)``, which never builds a (p×d) tensor per
example. All norm arithmetic happens in fp32 (or fp64 if the inputs are fp64) so that bf16/fp16
activations under autocast cannot distort the clip factors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from privacy_finetuner.errors import EngineError

__all__ = [
    "Contribution",
    "Factored",
    "Indexed",
    "Materialised",
    "clipped_sum",
    "gram",
    "materialise",
    "promote",
]


def promote(t: Tensor) -> Tensor:
    """Promote half precision to fp32 for norm arithmetic; keep fp32/fp64 as they are."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


@dataclass
class Factored:
    """``Gᵢ = Σₜ left[i, t] ⊗ right[i, t]``; left (B, T, p), right (B, T, d), param (p, d)."""

    left: Tensor
    right: Tensor


@dataclass
class Indexed:
    """``Gᵢ = Σₜ onehot(index[i, t], rows) ⊗ right[i, t]``; index (B, T) long, right (B, T, d)."""

    index: Tensor
    right: Tensor
    rows: int


@dataclass
class Materialised:
    """The per-example gradients themselves, ``(B, *param.shape)``."""

    grads: Tensor


Contribution = Factored | Indexed | Materialised


def materialise(c: Contribution) -> Tensor:
    """The per-example gradients ``(B, *shape)`` of a contribution (fp32 or fp64)."""
    if isinstance(c, Materialised):
        return promote(c.grads)
    if isinstance(c, Factored):
        return torch.einsum("btp,btd->bpd", promote(c.left), promote(c.right))
    right = promote(c.right)
    b, t, d = right.shape
    flat_index = (c.index + torch.arange(b, device=right.device)[:, None] * c.rows).reshape(-1)
    out = torch.zeros(b * c.rows, d, dtype=right.dtype, device=right.device)
    out.index_add_(0, flat_index, right.reshape(b * t, d))
    return out.view(b, c.rows, d)


def _gram_diag(a: Contribution, b: Contribution) -> Tensor:
    """``⟨Gᵃᵢ, Gᵇᵢ⟩`` for every example i, shape (B,)."""
    if a is b and isinstance(a, Materialised):  # a squared norm: no (B, p, d) temporary
        norm: Tensor = torch.linalg.vector_norm(promote(a.grads).flatten(1), dim=1)
        return norm.square()
    if isinstance(a, Materialised) or isinstance(b, Materialised):
        ma, mb = materialise(a), materialise(b)
        return (ma * mb).flatten(1).sum(1)
    if isinstance(a, Factored) and isinstance(b, Indexed):
        a, b = b, a
    right_a, right_b = promote(a.right), promote(b.right)
    rr = torch.bmm(right_a, right_b.transpose(1, 2))  # (B, Ta, Tb)
    if isinstance(a, Factored) and isinstance(b, Factored):
        ll = torch.bmm(promote(a.left), promote(b.left).transpose(1, 2))
        return (ll * rr).sum((1, 2))
    if not isinstance(a, Indexed):  # narrowed by the swaps above
        raise EngineError(f"unexpected contribution pair {type(a).__name__}, {type(b).__name__}")
    if isinstance(b, Indexed):
        same = a.index[:, :, None] == b.index[:, None, :]
        return (rr * same).sum((1, 2))
    # ⟨onehot(kₜ), left_bₛ⟩ = left_b[s, kₜ]: a gather instead of a (V×d) tensor.
    left_b = promote(b.left)  # (B, Tb, V)
    picked = left_b.gather(2, a.index[:, None, :].expand(-1, left_b.shape[1], -1))  # (B, Tb, Ta)
    return (rr * picked.transpose(1, 2)).sum((1, 2))


def _flat(t: Tensor) -> Tensor:
    return promote(t).reshape(-1, t.shape[-1])


def _gram_full(a: Contribution, b: Contribution) -> Tensor:
    """``⟨Gᵃᵢ, Gᵇⱼ⟩`` for every pair of examples, shape (B, B)."""
    if isinstance(a, Materialised) or isinstance(b, Materialised):
        ma, mb = materialise(a), materialise(b)
        return ma.flatten(1) @ mb.flatten(1).T
    if isinstance(a, Factored) and isinstance(b, Indexed):
        return _gram_full(b, a).T
    batch, ta = a.right.shape[:2]
    tb = b.right.shape[1]
    rr = _flat(a.right) @ _flat(b.right).T  # (B·Ta, B·Tb)
    if isinstance(a, Factored) and isinstance(b, Factored):
        tokens = (_flat(a.left) @ _flat(b.left).T) * rr
    else:
        if not isinstance(a, Indexed):  # narrowed by the swap above
            raise EngineError(
                f"unexpected contribution pair {type(a).__name__}, {type(b).__name__}"
            )
        if isinstance(b, Indexed):
            tokens = rr * (a.index.reshape(-1, 1) == b.index.reshape(1, -1))
        else:
            tokens = rr * _flat(b.left)[:, a.index.reshape(-1)].T
    return tokens.view(batch, ta, batch, tb).sum((1, 3))


def gram(a: Contribution, b: Contribution, *, full: bool) -> Tensor:
    """Inner products of per-example gradients: the (B,) diagonal, or the (B, B) matrix if full."""
    return _gram_full(a, b) if full else _gram_diag(a, b)


def clipped_sum(c: Contribution, coef: Tensor, shape: torch.Size) -> Tensor:
    """``Σᵢ coef[i] · Gᵢ`` with the parameter's shape (the book-keeping step of Bu et al. 2023).

    Args:
        c: the contribution of one use of a parameter.
        coef: (B,) per-example clip factors (a user's factor repeated on each of its examples).
        shape: the parameter's shape.
    """
    if isinstance(c, Materialised):
        grads = promote(c.grads)
        return (coef.to(grads.dtype) @ grads.reshape(grads.shape[0], -1)).view(shape)
    right = promote(c.right)
    scaled = (right * coef.to(right.dtype)[:, None, None]).reshape(-1, right.shape[-1])
    if isinstance(c, Factored):
        return (_flat(c.left).T @ scaled).view(shape)
    out = torch.zeros(c.rows, right.shape[-1], dtype=right.dtype, device=right.device)
    out.index_add_(0, c.index.reshape(-1), scaled)
    return out.view(shape)
