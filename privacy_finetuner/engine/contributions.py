"""Per-example gradient *representations* and the algebra the clipper needs on them.

A trainable tensor's per-example gradient Gᵢ is rarely materialised. Layers hand the clipper one
of three representations per use of a parameter (a parameter tied between two modules has two
uses, and its per-example gradient is the *sum* of both):

* :class:`Factored` — ``Gᵢ = Σₜ leftᵢₜ ⊗ rightᵢₜ`` (a Linear: output grad ⊗ input activation);
* :class:`Indexed` — ``Gᵢ = Σₜ e_{indexᵢₜ} ⊗ rightᵢₜ`` (an Embedding: one-hot rows ⊗ output grad);
* :class:`Materialised` — ``Gᵢ`` itself, shape ``(B, *param.shape)`` (norm weights, biases, vmap).

Everything the clipper asks is bilinear in these: the Gram entries ``⟨G¹ᵢ, G²ⱼ⟩`` (the diagonal for
per-example norms, the full matrix for per-user norms) and the clipped sum ``Σᵢ cᵢ Gᵢ``.

Precision rules (see ``docs/engine.md``): matmul *inputs* stay in the autocast dtype (bf16), but
every product that feeds a norm — Gram matrices, materialised per-example gradients — has fp32
*outputs* (fp32 accumulation, never a bf16 Gram: when per-token gradients nearly cancel, rounding
the large Gram entries to bf16 loses the whole norm). On CUDA that is ``mm/bmm(out_dtype=fp32)``;
the CPU has no such kernel, so there the inputs are upcast (exact, at fp32 matmul speed). Clipped
sums are gradients like the non-private ones: bf16 products accumulated into fp32 buffers.
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
    "accumulate_clipped_sum",
    "factored_sq_norms",
    "gram",
    "materialise",
    "promote",
]

_LOW = (torch.bfloat16, torch.float16)
# Largest fp32 temporary made by upcasting one chunk of a wide operand (CPU exact path).
_CHUNK_BYTES = 64 * 2**20
_OUT_DTYPE_OK: dict[str, bool] = {}


def promote(t: Tensor) -> Tensor:
    """Promote half precision to fp32 for norm arithmetic; keep fp32/fp64 as they are."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _wide(*ts: Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32


def _has_out_dtype(t: Tensor) -> bool:
    """Whether this device has bf16-in/fp32-out matmuls (CUDA in torch ≥ 2.8; not the CPU)."""
    if t.device.type != "cuda":
        return False
    key = str(t.device)
    if key not in _OUT_DTYPE_OK:
        probe = torch.zeros(1, 1, 1, dtype=t.dtype, device=t.device)
        try:
            torch.bmm(probe, probe, out_dtype=torch.float32)
            torch.mm(probe[0], probe[0], out_dtype=torch.float32)
            _OUT_DTYPE_OK[key] = True
        except (RuntimeError, TypeError):  # pragma: no cover - older torch / other backends
            _OUT_DTYPE_OK[key] = False
    return _OUT_DTYPE_OK[key]


def mm32(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` (2-D or batched 3-D) with an fp32 (fp64 for fp64 inputs) *output*, exactly.

    Low-precision inputs are multiplied with fp32 accumulation and an fp32 result; where the
    device lacks such a kernel (the CPU) they are upcast first, which is exact but runs at fp32
    matmul speed.
    """
    if a.dtype in _LOW and b.dtype == a.dtype and _has_out_dtype(a):
        fn = torch.bmm if a.dim() == 3 else torch.mm
        return fn(a, b, out_dtype=torch.float32)
    wide = _wide(a, b)
    return torch.matmul(a.to(wide), b.to(wide))


def _token_gram(a: Tensor, b: Tensor) -> Tensor:
    """``a bᵀ`` per example, (B, Ta, k) × (B, Tb, k) → (B, Ta, Tb) in fp32, chunked over k.

    Chunking bounds the fp32 copies the CPU's exact path makes of a wide operand (the head's
    (B, T, V) output gradient) to ``_CHUNK_BYTES``.
    """
    if (a.dtype in _LOW and b.dtype == a.dtype and _has_out_dtype(a)) or (
        a.dtype not in _LOW and b.dtype not in _LOW
    ):
        return mm32(a, b.transpose(1, 2))
    k = a.shape[-1]
    rows = a.shape[0] * max(a.shape[1], b.shape[1])
    step = max(1, min(k, _CHUNK_BYTES // (4 * max(1, rows))))
    out: Tensor | None = None
    for s in range(0, k, step):
        part = mm32(a[..., s : s + step], b[..., s : s + step].transpose(1, 2))
        out = part if out is None else out.add_(part)
    if out is None:  # k == 0
        return torch.zeros(a.shape[0], a.shape[1], b.shape[1], dtype=_wide(a, b), device=a.device)
    return out


@dataclass
class Factored:
    """``Gᵢ = Σₜ left[i, t] ⊗ right[i, t]``; left (B, T, p), right (B, T, d), param (p, d).

    ``sq``, if set, holds the per-example squared norms already (the "norm-only" plan computes
    them from transient per-example gradients; the clipped sum still uses the factors).
    """

    left: Tensor
    right: Tensor
    sq: Tensor | None = None


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


def per_example_grads(left: Tensor, right: Tensor) -> Tensor:
    """``Σₜ leftᵢₜ ⊗ rightᵢₜ`` for every example, (B, p, d), fp32 output (see :func:`mm32`)."""
    return mm32(left.transpose(1, 2), right)


def materialise(c: Contribution) -> Tensor:
    """The per-example gradients ``(B, *shape)`` of a contribution (fp32 or fp64)."""
    if isinstance(c, Materialised):
        return promote(c.grads)
    if isinstance(c, Factored):
        return per_example_grads(c.left, c.right)
    right = promote(c.right)
    b, t, d = right.shape
    flat_index = (c.index + torch.arange(b, device=right.device)[:, None] * c.rows).reshape(-1)
    out = torch.zeros(b * c.rows, d, dtype=right.dtype, device=right.device)
    out.index_add_(0, flat_index, right.reshape(b * t, d))
    return out.view(b, c.rows, d)


def factored_sq_norms(left: Tensor, right: Tensor) -> Tensor:
    """``‖Σₜ leftᵢₜ ⊗ rightᵢₜ‖²`` per example from transient per-example gradients, (B,).

    Works through row blocks of the weight so that no more than ``_CHUNK_BYTES`` of per-example
    gradients exist at once: the norm-only plan, O(B·T·p·d) FLOPs and no stored gradients.
    """
    b, _, p = left.shape
    d = right.shape[-1]
    step = max(1, min(p, _CHUNK_BYTES // (4 * max(1, b * d))))
    total: Tensor | None = None
    for s in range(0, p, step):
        block = per_example_grads(left[..., s : s + step], right)
        sq = block.square().sum((1, 2))
        total = sq if total is None else total + sq
    if total is None:
        return torch.zeros(b, dtype=_wide(left, right), device=left.device)
    return total


def _segments(*indexed: Indexed) -> tuple[list[Tensor], Tensor, int]:
    """Common segment ids of equal (example, row) keys over several Indexed uses.

    Sorting the keys gives every distinct (example, id) pair one segment: O(N log N) and O(N·d)
    sums instead of a (B, T, T) equal-id mask. No host sync: the number of segments is bounded
    by N, the buffers are sized N and unused segments stay zero.
    """
    keys = []
    for c in indexed:
        b = c.index.shape[0]
        offsets = torch.arange(b, device=c.index.device)[:, None] * c.rows
        keys.append((c.index + offsets).reshape(-1))
    flat = torch.cat(keys) if len(keys) > 1 else keys[0]
    sorted_keys, order = flat.sort()
    new = torch.ones_like(sorted_keys, dtype=torch.bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    seg_sorted = new.cumsum(0) - 1
    seg = torch.empty_like(seg_sorted)
    seg[order] = seg_sorted
    example = torch.zeros_like(seg_sorted).scatter_(0, seg_sorted, sorted_keys // indexed[0].rows)
    pieces = list(torch.split(seg, [k.numel() for k in keys]))
    return pieces, example, flat.numel()


def _indexed_inner(a: Indexed, b: Indexed) -> Tensor:
    """``⟨Gᵃᵢ, Gᵇᵢ⟩`` per example for two Indexed uses (the same one for a squared norm)."""
    batch = a.index.shape[0]
    wide = _wide(a.right, b.right)
    uses = (a,) if a is b else (a, b)
    pieces, example, n = _segments(*uses)
    sums = []
    for c, seg in zip(uses, pieces, strict=True):
        d = c.right.shape[-1]
        buf = torch.zeros(n, d, dtype=wide, device=c.right.device)
        buf.index_add_(0, seg, c.right.reshape(-1, d).to(wide))
        sums.append(buf)
    per_segment = sums[0].square().sum(1) if a is b else (sums[0] * sums[1]).sum(1)
    out = torch.zeros(batch, dtype=wide, device=per_segment.device)
    return out.index_add_(0, example, per_segment)


def _gram_diag(a: Contribution, b: Contribution) -> Tensor:
    """``⟨Gᵃᵢ, Gᵇᵢ⟩`` for every example i, shape (B,)."""
    if a is b and isinstance(a, Factored) and a.sq is not None:
        return a.sq
    if a is b and isinstance(a, Materialised):  # a squared norm: no (B, p, d) temporary
        norm: Tensor = torch.linalg.vector_norm(promote(a.grads).flatten(1), dim=1)
        return norm.square()
    if isinstance(a, Materialised) or isinstance(b, Materialised):
        ma, mb = materialise(a), materialise(b)
        return (ma * mb).flatten(1).sum(1)
    if isinstance(a, Indexed) and isinstance(b, Indexed):
        return _indexed_inner(a, b)
    if isinstance(a, Factored) and isinstance(b, Indexed):
        a, b = b, a
    rr = _token_gram(a.right, b.right)  # (B, Ta, Tb), fp32
    if isinstance(a, Factored) and isinstance(b, Factored):
        ll = _token_gram(a.left, b.left)
        return (ll * rr).sum((1, 2))
    if not (isinstance(a, Indexed) and isinstance(b, Factored)):  # narrowed by the swap above
        raise EngineError(f"unexpected contribution pair {type(a).__name__}, {type(b).__name__}")
    # ⟨onehot(kₜ), left_bₛ⟩ = left_b[s, kₜ]: a gather in the input dtype, no fp32 (B, T, V) copy.
    picked = b.left.gather(2, a.index[:, None, :].expand(-1, b.left.shape[1], -1))  # (B, Tb, Ta)
    return (rr * picked.transpose(1, 2).to(rr.dtype)).sum((1, 2))


def _flat(t: Tensor) -> Tensor:
    return t.reshape(-1, t.shape[-1])


def _gram_full(a: Contribution, b: Contribution) -> Tensor:
    """``⟨Gᵃᵢ, Gᵇⱼ⟩`` for every pair of examples, shape (B, B)."""
    if isinstance(a, Materialised) or isinstance(b, Materialised):
        ma, mb = materialise(a), materialise(b)
        return ma.flatten(1) @ mb.flatten(1).T
    if isinstance(a, Factored) and isinstance(b, Indexed):
        return _gram_full(b, a).T
    batch, ta = a.right.shape[:2]
    tb = b.right.shape[1]
    rr = mm32(_flat(a.right), _flat(b.right).T)  # (B·Ta, B·Tb)
    if isinstance(a, Factored) and isinstance(b, Factored):
        tokens = mm32(_flat(a.left), _flat(b.left).T) * rr
    else:
        if not isinstance(a, Indexed):  # narrowed by the swap above
            raise EngineError(
                f"unexpected contribution pair {type(a).__name__}, {type(b).__name__}"
            )
        if isinstance(b, Indexed):
            tokens = rr * (a.index.reshape(-1, 1) == b.index.reshape(1, -1))
        else:
            tokens = rr * _flat(b.left)[:, a.index.reshape(-1)].T.to(rr.dtype)
    return tokens.view(batch, ta, batch, tb).sum((1, 3))


def gram(a: Contribution, b: Contribution, *, full: bool) -> Tensor:
    """Inner products of per-example gradients: the (B,) diagonal, or the (B, B) matrix if full."""
    return _gram_full(a, b) if full else _gram_diag(a, b)


def _mask(t: Tensor, drop: Tensor | None) -> Tensor:
    """Zero the examples dropped (non-finite ones: 0 · NaN would still be NaN); one kernel."""
    if drop is None:
        return t
    return t.masked_fill(drop.view(-1, *([1] * (t.dim() - 1))), 0)


def accumulate_clipped_sum(
    c: Contribution,
    coef: Tensor,
    out: Tensor | None,
    shape: torch.Size,
    *,
    acc_dtype: torch.dtype,
    drop: Tensor | None = None,
) -> Tensor:
    """``out + Σᵢ coef[i] · Gᵢ`` with the parameter's shape (book-keeping, Bu et al. 2023).

    Args:
        c: the contribution of one use of a parameter.
        coef: (B,) per-example clip factors (a user's factor repeated on each of its examples).
        out: the fp32 accumulator so far, or None (allocated here, so unused parameters and the
            first use cost no zero-filled buffer); updated in place when given.
        shape: the parameter's shape.
        acc_dtype: the accumulator's dtype (fp32, fp64 for an fp64 model).
        drop: (B,) bool, True for examples of skipped units (non-finite norm): their inputs
            are zeroed.

    Returns:
        The accumulator.
    """
    if isinstance(c, Materialised):
        grads = _mask(c.grads, drop)
        wide = promote(grads)
        total = (coef.to(wide.dtype) @ wide.reshape(wide.shape[0], -1)).view(shape)
    elif isinstance(c, Factored):
        # The product runs in the lower of the two input dtypes, like the non-private weight
        # gradient under autocast; the clip factor scales the narrower factor.
        dt = c.left.dtype if c.left.dtype in _LOW else c.right.dtype
        left, right = c.left.to(dt), c.right.to(dt)
        coef3 = coef.to(dt)[:, None, None]
        if left.shape[-1] <= right.shape[-1]:
            left, right = _mask(left * coef3, drop), _mask(right, drop)
        else:
            left, right = _mask(left, drop), _mask(right * coef3, drop)
        product = _flat(left).T @ _flat(right)
        total = product.view(shape)
    else:
        right = _mask(c.right, drop)
        d = right.shape[-1]
        scaled = (right.to(acc_dtype) * coef.to(acc_dtype)[:, None, None]).reshape(-1, d)
        if out is None:
            out = torch.zeros(shape, dtype=acc_dtype, device=scaled.device)
        out.view(c.rows, d).index_add_(0, c.index.reshape(-1), scaled)
        return out
    if out is None:
        return total.to(acc_dtype)
    return out.add_(total)
