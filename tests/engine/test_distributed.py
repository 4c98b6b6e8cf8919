"""Data-parallel DP-SGD on real gloo processes: same update as one process, noise drawn once."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from dist_helpers import run_ranks
from engine_helpers import VOCAB, ListDataset, make_batch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from privacy_finetuner.engine import PrivacyEngine
from privacy_finetuner.engine.distributed import DataParallel, shard_units
from privacy_finetuner.errors import EngineError, PrivacyWarning

N = 16
USERS = [0, 0, 1, 2, 2, 2, 3, 4, 4, 5, 6, 6, 6, 6, 7, 7]


class Small(nn.Module):
    """Embedding → LayerNorm → Linear → tanh → Linear head (no transformers: fast to spawn)."""

    def __init__(self, d: int = 12, h: int = 24) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, d)
        self.ln = nn.LayerNorm(d)
        self.up = nn.Linear(d, h)
        self.head = nn.Linear(h, VOCAB)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.head(torch.tanh(self.up(self.ln(self.emb(input_ids)))))  # type: ignore[no-any-return]


def _data() -> ListDataset:
    return ListDataset(make_batch([5, 3, 6, 2, 7, 4, 6, 1] * 2, 7, seed=4), USERS)


def _engine(
    dp: DataParallel | None,
    *,
    unit: str,
    sigma: float,
    clip: float,
    batch_size: int,
    secure: bool = False,
    width: tuple[int, int] = (12, 24),
) -> tuple[nn.Module, torch.optim.Optimizer, PrivacyEngine, Any]:
    torch.manual_seed(0 if dp is None or dp.is_main else 100 + dp.rank)  # rank 1 is synced
    model = Small(*width)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyWarning)
        engine = PrivacyEngine(seed=7, secure_mode=secure, data_parallel=dp)
        _, _, loader = engine.make_private(
            module=model,
            optimizer=opt,
            data_loader=DataLoader(_data(), batch_size=batch_size),
            noise_multiplier=sigma,
            max_grad_norm=clip,
            privacy_unit=unit,
            max_physical_batch_size=3,
            max_examples_per_user=3 if unit == "user" else None,
        )
    return model, opt, engine, loader


def _train(dp: DataParallel | None, unit: str, steps: int = 4) -> dict[str, Any]:
    """A few SGD steps at q = 1/2 with σ = 0; the update and each step's global counts."""
    model, _, engine, loader = _engine(dp, unit=unit, sigma=0.0, clip=0.4, batch_size=4)
    results = [engine.step(loader.sample()) for _ in range(steps)]
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "results": [(r.loss, r.num_units, r.num_examples) for r in results],
        "steps": engine.steps,
        "history": [s.to_dict() for s in engine.accountant.history],
    }


def _noise(dp: DataParallel | None, secure: bool) -> dict[str, Tensor]:
    """σ'C = 2 with C = 1e-6: the clipped sum is ≤ B·C ≈ 0, so grad·qN is the noise itself."""
    model, _, engine, loader = _engine(
        dp, unit="example", sigma=2.0 / 1e-6, clip=1e-6, batch_size=N, secure=secure,
        width=(40, 160),
    )  # fmt: skip
    engine.privatize_gradients(loader.sample())
    return {n: p.grad.detach() * engine.expected_batch_size for n, p in model.named_parameters()}


def _worker_train(rank: int, out: Path) -> None:
    dp = DataParallel.from_process_group()
    result = {unit: _train(dp, unit) for unit in ("example", "user")}
    torch.save(result, out / f"train{rank}.pt")


def _worker_noise(rank: int, out: Path) -> None:
    dp = DataParallel.from_process_group()
    torch.save({s: _noise(dp, s) for s in (False, True)}, out / f"noise{rank}.pt")


def _max_rel(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)) for k in b)


def test_two_ranks_take_the_single_process_step_without_noise(tmp_path: Path) -> None:
    """σ = 0: same Poisson batches (rank 0 samples), same clipped sum, same update to 1e-5."""
    run_ranks(_worker_train, tmp_path)
    ranks = [torch.load(tmp_path / f"train{r}.pt") for r in range(2)]
    for unit in ("example", "user"):
        single = _train(None, unit)
        for got in ranks:
            assert got[unit]["steps"] == 4 and got[unit]["history"] == single["history"]
            assert _max_rel(got[unit]["params"], single["params"]) < 1e-5
            for (loss, units, examples), (want_loss, want_units, want_examples) in zip(
                got[unit]["results"], single["results"], strict=True
            ):
                assert (units, examples) == (want_units, want_examples)  # global counts
                assert loss == pytest.approx(want_loss, rel=1e-6, nan_ok=True)
        assert any(u >= 2 for _, u, _ in single["results"])  # the batches were really split
        for name, p in ranks[0][unit]["params"].items():  # the replicas are identical
            assert torch.equal(p, ranks[1][unit]["params"][name]), name


def test_noise_is_added_once_in_total_not_once_per_rank(tmp_path: Path) -> None:
    """The all-reduced noise has variance σ²C² (2σ²C² if each rank added its own), on every
    rank the same; outside secure mode it is exactly the single-process draw for the seed."""
    run_ranks(_worker_noise, tmp_path)
    ranks = [torch.load(tmp_path / f"noise{r}.pt") for r in range(2)]
    for secure in (False, True):
        noise = torch.cat([g.flatten() for g in ranks[0][secure].values()])
        assert noise.numel() > 10_000
        assert float(noise.var()) == pytest.approx(4.0, rel=0.05)  # sampling error ≈ 1.3%
        assert abs(float(noise.mean())) < 4 * 2.0 / noise.numel() ** 0.5
        for name, g in ranks[0][secure].items():
            assert torch.equal(g, ranks[1][secure][name]), name
    single = _noise(None, secure=False)
    assert _max_rel(ranks[0][False], single) < 1e-5


def test_units_are_split_disjointly_without_splitting_a_user() -> None:
    members = [[0, 1, 2], [3], [4, 5], [6], [7, 8, 9, 10], [11]]
    for world in (1, 2, 3, 5, 8):
        shares = [shard_units(members, r, world) for r in range(world)]
        assert [u for share in shares for u in share] == members  # contiguous, disjoint, all
        sizes = [sum(len(u) for u in share) for share in shares]
        assert max(sizes) - min(sizes) <= 4 + 1  # within one (largest) unit of balanced
    assert shard_units([], 0, 2) == [] and shard_units([], 1, 2) == []
    assert [len(shard_units([[i] for i in range(7)], r, 2)) for r in range(2)] == [3, 4]


def test_data_parallel_refuses_a_loader_it_cannot_poisson_sample() -> None:
    with warnings.catch_warnings(), pytest.raises(EngineError, match="Poisson"):
        warnings.simplefilter("ignore", PrivacyWarning)
        engine = PrivacyEngine(seed=0, data_parallel=DataParallel(rank=0, world_size=2))
        engine.make_private(
            module=Small(), optimizer=torch.optim.SGD(Small().parameters(), lr=0.1),
            data_loader=DataLoader(_data(), batch_size=4), noise_multiplier=1.0,
            max_grad_norm=1.0, poisson_sampling=False,
        )  # fmt: skip
