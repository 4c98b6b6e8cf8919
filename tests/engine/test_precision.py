"""Precision rules: bf16 inputs, fp32 Gram / per-example outputs, norms exact to 1e-3 vs fp64.

The hard case is an example whose per-token gradients nearly cancel: each Gram entry is large,
the norm is small, and a bf16 *output* anywhere in the norm loses it entirely.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from privacy_finetuner.engine import contributions as cb
from privacy_finetuner.engine.contributions import (
    Factored,
    Indexed,
    accumulate_clipped_sum,
    factored_sq_norms,
    gram,
    materialise,
    per_example_grads,
)

B, T, P, D = 3, 16, 24, 20


def _cancelling(seed: int = 0) -> tuple[Tensor, Tensor]:
    """bf16 (B,T,P) output grads and (B,T,D) inputs whose per-token outer products cancel.

    Tokens come in pairs (g, x), (-g, x + δ): Σₜ gₜxₜᵀ = -Σ g δᵀ is ~1e-2 of any term.
    """
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(B, T // 2, P, generator=gen)
    x = torch.randn(B, T // 2, D, generator=gen)
    delta = 1e-2 * torch.randn(B, T // 2, D, generator=gen)
    left = torch.cat([g, -g], 1).bfloat16()
    right = torch.cat([x, x + delta], 1).bfloat16()
    return left, right


def _ref_sq(left: Tensor, right: Tensor) -> Tensor:
    grads = torch.einsum("btp,btd->bpd", left.double(), right.double())
    return grads.flatten(1).square().sum(1)


def _rel(got: Tensor, want: Tensor) -> float:
    return float(((got.double() - want) / want).abs().max())


def test_case_is_hard_for_a_bf16_gram() -> None:
    """The bf16-output Gram (what the rule forbids) is far off here; fp32 outputs are not."""
    left, right = _cancelling()
    want = _ref_sq(left, right).sqrt()
    bf16 = (torch.bmm(left, left.mT) * torch.bmm(right, right.mT)).float().sum((1, 2))
    assert _rel(bf16.clamp_min(0).sqrt(), want) > 0.1


def test_cancelling_tokens_ghost_norm() -> None:
    left, right = _cancelling()
    got = gram(Factored(left, right), Factored(left, right), full=False)
    assert got.dtype == torch.float32
    assert _rel(got.sqrt(), _ref_sq(left, right).sqrt()) <= 1e-3


def test_cancelling_tokens_materialised_and_norm_only() -> None:
    left, right = _cancelling(1)
    want = _ref_sq(left, right).sqrt()
    grads = per_example_grads(left, right)
    assert grads.dtype == torch.float32
    assert _rel(grads.flatten(1).norm(dim=1), want) <= 1e-3
    assert _rel(factored_sq_norms(left, right).sqrt(), want) <= 1e-3


def test_cancelling_tokens_wide_operand_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny chunk budget forces the chunked fp32 path of a wide (head-like) operand."""
    monkeypatch.setattr(cb, "_CHUNK_BYTES", 4 * B * T * 5)  # 5 columns per chunk
    left, right = _cancelling(2)
    want = _ref_sq(left, right).sqrt()
    got = gram(Factored(left, right), Factored(left, right), full=False).sqrt()
    assert _rel(got, want) <= 1e-3
    assert _rel(factored_sq_norms(left, right).sqrt(), want) <= 1e-3


def test_cancelling_tokens_embedding_and_tied_cross_term() -> None:
    """Equal token ids with cancelling gradients (embedding), and the tied head's cross term."""
    vocab = 11
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, vocab, (B, T // 2), generator=gen)
    ids = torch.cat([ids, ids], 1)  # every id twice
    g = torch.randn(B, T // 2, D, generator=gen)
    emb_grad = torch.cat([g, -g + 1e-2 * torch.randn(B, T // 2, D, generator=gen)], 1)
    emb = Indexed(ids, emb_grad.bfloat16(), vocab)
    head_left = torch.randn(B, T, vocab, generator=gen).bfloat16()
    head_right = torch.randn(B, T, D, generator=gen).bfloat16()
    head = Factored(head_left, head_right)
    e64 = materialise(Indexed(ids, emb.right.double(), vocab))
    h64 = torch.einsum("btp,btd->bpd", head_left.double(), head_right.double())
    want_emb = e64.flatten(1).square().sum(1)
    assert _rel(gram(emb, emb, full=False), want_emb) <= 1e-3
    want_cross = (e64 * h64).flatten(1).sum(1)
    got_cross = gram(emb, head, full=False)
    assert float((got_cross.double() - want_cross).abs().max()) <= 1e-3 * float(
        want_cross.abs().max()
    )


def test_clipped_sum_accumulates_fp32_from_bf16() -> None:
    """The clipped sum is a gradient like the non-private one: bf16 products, fp32 buffer."""
    left, right = _cancelling(4)
    coef = torch.tensor([1.0, 0.5, 0.25])
    out = accumulate_clipped_sum(
        Factored(left, right), coef, None, torch.Size([P, D]), acc_dtype=torch.float32
    )
    assert out.dtype == torch.float32
    want = torch.einsum("b,btp,btd->pd", coef.double(), left.double(), right.double())
    assert float((out.double() - want).norm() / want.norm()) < 2e-2
