"""Tiny models, data and the slow, obvious reference: per-example grads, clip, sum."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import DataLoader

from privacy_finetuner.engine import PrivacyEngine, causal_lm_loss
from privacy_finetuner.errors import PrivacyWarning

VOCAB = 37


class MyRMSNorm(nn.Module):
    """An RMSNorm that is not from any library: detected as norm-like by behaviour."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(1 + 0.3 * torch.randn(d))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class Toy(nn.Module):
    """Embedding → LayerNorm → Linear → tanh → Conv1D → RMSNorm → untied Linear head."""

    def __init__(self, d: int = 12, h: int = 20, mid: nn.Module | None = None) -> None:
        super().__init__()
        from transformers.pytorch_utils import Conv1D

        self.emb = nn.Embedding(VOCAB, d)
        self.ln = nn.LayerNorm(d)
        with torch.no_grad():
            self.ln.weight.add_(0.3 * torch.randn(d))
            self.ln.bias.add_(0.3 * torch.randn(d))
        self.up = nn.Linear(d, h)
        self.down = Conv1D(d, h)
        nn.init.normal_(self.down.bias, std=0.1)
        self.norm = MyRMSNorm(d)
        self.mid = mid if mid is not None else nn.Identity()
        self.head = nn.Linear(d, VOCAB, bias=False)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        x = self.ln(self.emb(input_ids))
        x = x + self.down(torch.tanh(self.up(x)))
        return self.head(self.mid(self.norm(x)))  # type: ignore[no-any-return]


def gpt2(n_layer: int = 2, n_embd: int = 32) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=VOCAB,
        n_positions=32,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
    )
    return GPT2LMHeadModel(cfg)


def llama(n_layer: int = 2, hidden: int = 32) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=n_layer,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # make the RMSNorm weights non-trivial
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    return model


def lora(model: nn.Module, targets: list[str], fan_in_fan_out: bool = False) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=targets,
        lora_dropout=0.0,
        init_lora_weights=False,
        fan_in_fan_out=fan_in_fan_out,
    )
    return get_peft_model(model, cfg)


def make_batch(
    lengths: Sequence[int], seq: int, *, seed: int = 0, masked_prefix: int = 0
) -> dict[str, Tensor]:
    """Right-padded causal-LM batch; padding has mask 0 and label -100."""
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    ids = torch.randint(1, VOCAB, (b, seq), generator=g)
    mask = torch.zeros(b, seq, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :masked_prefix] = -100
    ids = ids.masked_fill(mask == 0, 0)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class ListDataset(torch.utils.data.Dataset[dict[str, Tensor]]):
    def __init__(self, batch: dict[str, Tensor], user_ids: list[int] | None = None) -> None:
        self.batch = batch
        self.user_ids = user_ids

    def __len__(self) -> int:
        return int(self.batch["input_ids"].shape[0])

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.batch.items()}


def private_engine(
    model: nn.Module,
    batch: dict[str, Tensor],
    *,
    clip: float,
    noise: float = 0.0,
    user_ids: list[int] | None = None,
    physical: int = 3,
    seed: int = 0,
    **kwargs: Any,
) -> PrivacyEngine:
    """An engine over ``batch`` as the whole data set with q = 1 (every unit is sampled)."""
    data = ListDataset(batch, user_ids)
    units = len(set(user_ids)) if user_ids is not None else len(data)
    loader = DataLoader(data, batch_size=units)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyWarning)
        engine = PrivacyEngine(seed=seed)
        engine.make_private(
            module=model,
            optimizer=opt,
            data_loader=loader,
            noise_multiplier=noise,
            max_grad_norm=clip,
            privacy_unit="user" if user_ids is not None else "example",
            max_physical_batch_size=physical,
            **kwargs,
        )
    return engine


def engine_clipped_sum(
    engine: PrivacyEngine, loss_fn: Callable[..., Tensor] | None = None
) -> dict[str, Tensor]:
    """Σ clip(g_u) as the engine computes it (σ = 0, q = 1: grad × expected batch size)."""
    assert engine.module is not None
    batch = engine.data_loader.sample()  # q = 1: every unit, grouped by user
    assert batch.num_units == len(engine.data_loader.units)
    engine.privatize_gradients(batch, loss_fn)
    out = {
        n: p.grad.detach().double() * engine.expected_batch_size
        for n, p in engine.module.named_parameters()
        if p.requires_grad
    }
    for p in engine.module.parameters():
        p.grad = None
    return out


def reference_per_example(
    model: nn.Module, batch: dict[str, Tensor], loss_fn: Callable[..., Tensor] = causal_lm_loss
) -> dict[str, Tensor]:
    """Per-example gradients (B, *shape) in float64, one example at a time (slow, obvious)."""
    ref = copy.deepcopy(model).double()
    names = [n for n, p in ref.named_parameters() if p.requires_grad]
    b = batch["input_ids"].shape[0]
    rows: dict[str, list[Tensor]] = {n: [] for n in names}
    for i in range(b):
        one = {k: v[i : i + 1] for k, v in batch.items()}
        ref.zero_grad(set_to_none=True)
        loss_fn(ref, one).sum().backward()
        for n, p in ref.named_parameters():
            if p.requires_grad:
                rows[n].append(p.grad.clone() if p.grad is not None else torch.zeros_like(p))
    return {n: torch.stack(v) for n, v in rows.items()}


def reference_per_example_vmap(
    model: nn.Module, batch: dict[str, Tensor], loss_fn: Callable[..., Tensor] = causal_lm_loss
) -> dict[str, Tensor]:
    """Per-example gradients via torch.func vmap(grad(loss)) in float64 (for plain models)."""
    ref = copy.deepcopy(model).double()
    params = {n: p.detach() for n, p in ref.named_parameters() if p.requires_grad}

    def loss(ps: dict[str, Tensor], one: dict[str, Tensor]) -> Tensor:
        batch1 = {k: v.unsqueeze(0) for k, v in one.items()}
        return loss_fn(lambda **kw: functional_call(ref, ps, (), kw), batch1).sum()

    return vmap(grad(loss), in_dims=(None, 0))(params, batch)  # type: ignore[no-any-return]


def clip_and_sum(
    per_example: dict[str, Tensor], clip: float, user_ids: list[int] | None = None
) -> dict[str, Tensor]:
    """Σ_u clip(Σ_{i∈u} g_i, C) from materialised per-example gradients."""
    b = next(iter(per_example.values())).shape[0]
    owners = list(range(b)) if user_ids is None else user_ids
    users = sorted(set(owners))
    out = {n: torch.zeros_like(g[0]) for n, g in per_example.items()}
    for u in users:
        idx = torch.tensor([i for i in range(b) if owners[i] == u])
        g_u = {n: g[idx].sum(0) for n, g in per_example.items()}
        norm = torch.sqrt(sum((v**2).sum() for v in g_u.values()))
        factor = min(1.0, clip / (float(norm) + 1e-6))
        for n in out:
            out[n] += factor * g_u[n]
    return out


def norms(per_example: dict[str, Tensor]) -> Tensor:
    return torch.sqrt(sum((g.flatten(1) ** 2).sum(1) for g in per_example.values()))


def rel_error(got: dict[str, Tensor], want: dict[str, Tensor]) -> float:
    assert got.keys() == want.keys(), (sorted(got), sorted(want))
    num = sum(((got[n] - want[n]) ** 2).sum() for n in want)
    den = sum((want[n] ** 2).sum() for n in want)
    return float(torch.sqrt(num / den))
