"""Poisson sampling statistics, per-user caps, micro-batch packing, non-Poisson refusal."""

from __future__ import annotations

import warnings

import pytest
import torch
from engine_helpers import ListDataset, Toy, make_batch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from privacy_finetuner.engine import PoissonDataLoader, PrivacyEngine
from privacy_finetuner.engine.batching import micro_batches
from privacy_finetuner.engine.sampler import group_units
from privacy_finetuner.errors import PrivacyWarning, SamplingError


def _loader(
    n: int, q: float, *, users: list[list[int]] | None = None, cap: int | None = None, seed: int = 0
) -> PoissonDataLoader:
    data = ListDataset(make_batch([3] * n, 3))
    units = users if users is not None else [[i] for i in range(n)]
    return PoissonDataLoader(
        data,
        collate_fn=torch.utils.data.default_collate,
        units=units,
        sample_rate=q,
        max_examples_per_user=cap,
        generator=torch.Generator().manual_seed(seed),
    )


def test_batch_sizes_are_binomial() -> None:
    n, q, draws = 400, 0.05, 600
    loader = _loader(n, q)
    sizes = torch.tensor([loader.sample().num_units for _ in range(draws)], dtype=torch.float64)
    mean, var = n * q, n * q * (1 - q)
    assert abs(float(sizes.mean()) - mean) < 4 * (var / draws) ** 0.5
    assert 0.8 * var < float(sizes.var()) < 1.2 * var
    assert float(sizes.min()) < mean < float(sizes.max())  # variable size, not fixed


def test_every_unit_is_included_at_rate_q() -> None:
    n, q, draws = 50, 0.2, 1000
    data = ListDataset({"input_ids": torch.arange(n)[:, None], "labels": torch.arange(n)[:, None]})
    tagged = PoissonDataLoader(
        data,
        collate_fn=torch.utils.data.default_collate,
        units=[[i] for i in range(n)],
        sample_rate=q,
        generator=torch.Generator().manual_seed(3),
    )
    counts = torch.zeros(n)
    for _ in range(draws):
        counts[tagged.sample()["input_ids"][:, 0]] += 1
    sd = (q * (1 - q) / draws) ** 0.5
    assert float((counts / draws - q).abs().max()) < 5 * sd


def test_empty_batches_keep_the_schema() -> None:
    loader = _loader(10, 0.01, seed=1)
    batch = next(b for b in (loader.sample() for _ in range(200)) if b.num_units == 0)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape == (0, 3) and batch.unit_index.numel() == 0


def test_users_are_sampled_whole_and_capped() -> None:
    users = group_units([5, 5, 5, 9, 2, 2, 5])
    assert users == [[0, 1, 2, 6], [3], [4, 5]]
    loader = _loader(7, 1.0, users=users, cap=2, seed=4)
    seen = set()
    for _ in range(30):
        batch = loader.sample()
        assert batch.num_units == 3
        assert torch.bincount(batch.unit_index).tolist() == [2, 1, 2]
        assert torch.equal(batch.unit_index, batch.unit_index.sort().values)  # contiguous
        seen.add(tuple(batch["input_ids"][:2, 0].tolist()))
    assert len(seen) > 1  # the capped user's examples are chosen at random


def test_sampler_is_reproducible_from_its_state() -> None:
    loader = _loader(100, 0.1, seed=7)
    loader.sample()
    state = loader.state_dict()
    first = [loader.sample().num_units for _ in range(5)]
    loader.load_state_dict(state)
    assert [loader.sample().num_units for _ in range(5)] == first


def test_epoch_length_is_one_over_q() -> None:
    assert len(_loader(100, 0.1)) == 10
    assert len(list(_loader(100, 0.25))) == 4


def test_micro_batches_never_split_a_unit() -> None:
    index = torch.tensor([0, 0, 0, 1, 2, 2, 2, 2, 2, 3])
    assert list(micro_batches(index, 4)) == [(0, 4), (4, 9), (9, 10)]
    assert list(micro_batches(torch.arange(7), 3)) == [(0, 3), (3, 6), (6, 7)]
    assert list(micro_batches(torch.zeros(0, dtype=torch.long), 3)) == []


def _make_private(loader: object, **kwargs: object) -> PrivacyEngine:
    model = Toy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyWarning)
        engine = PrivacyEngine(seed=0)
    engine.make_private(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=loader,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        **kwargs,
    )
    return engine


def test_plain_loader_is_resampled_with_poisson() -> None:
    data = ListDataset(make_batch([3] * 40, 3))
    engine = _make_private(DataLoader(data, batch_size=4, shuffle=True))
    assert isinstance(engine.data_loader, PoissonDataLoader)
    assert engine.sample_rate == pytest.approx(0.1)
    assert engine.epsilon_valid


def test_non_poisson_loaders_are_refused() -> None:
    data = ListDataset(make_batch([3] * 40, 3))
    custom = DataLoader(data, batch_sampler=BatchSampler(SequentialSampler(data), 4, False))
    for loader in (custom, [make_batch([3] * 4, 3)]):
        with pytest.raises(SamplingError, match="Poisson"):
            _make_private(loader)


def test_opting_out_of_poisson_marks_epsilon_invalid() -> None:
    data = ListDataset(make_batch([3] * 40, 3))
    custom = DataLoader(data, batch_sampler=BatchSampler(SequentialSampler(data), 4, False))
    with pytest.warns(PrivacyWarning, match="NOT a valid"):
        engine = _make_private(custom, poisson_sampling=False)
    assert engine.data_loader is custom and not engine.epsilon_valid
    assert engine.sample_rate == pytest.approx(0.1)
    result = engine.step(next(iter(custom)))
    assert result.num_examples == 4 and engine.steps == 1
    with pytest.warns(PrivacyWarning, match="not valid"):
        engine.get_epsilon(1e-5)


def test_user_unit_needs_user_ids() -> None:
    data = ListDataset(make_batch([3] * 8, 3))
    with pytest.raises(SamplingError, match="user_ids"):
        _make_private(DataLoader(data, batch_size=2), privacy_unit="user")
    engine = _make_private(
        DataLoader(data, batch_size=2), privacy_unit="user", user_ids=[0, 0, 1, 1, 2, 2, 3, 3]
    )
    assert engine.sample_rate == pytest.approx(0.5)  # batch size / number of users


def test_empty_dataset_is_refused_with_a_clear_error() -> None:
    from privacy_finetuner.engine.sampler import make_poisson_loader

    empty = DataLoader(torch.utils.data.TensorDataset(torch.zeros(0, 3)), batch_size=4)
    with pytest.raises(SamplingError, match="empty"):
        make_poisson_loader(
            empty,
            user_ids=None,
            by_user=False,
            max_examples_per_user=None,
            generator=torch.Generator().manual_seed(0),
            secure_mode=False,
        )
