"""Poisson sampling of examples or users into logical batches.

Each logical step, every unit (an example, or a user with all its examples) joins independently
with probability q; the batch size is therefore random, possibly zero, and that is exactly the
subsampled Gaussian mechanism the accountant composes. Fixed-size shuffled batches are *not* this
mechanism, which is why the engine refuses loaders it cannot re-sample this way.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from privacy_finetuner.errors import InvalidParameterError, SamplingError

__all__ = [
    "GRID_BITS",
    "PoissonBatch",
    "PoissonDataLoader",
    "PoissonTupleBatch",
    "group_units",
    "inclusion_threshold",
    "make_poisson_loader",
]

#: Inclusion is decided on integers: unit joins iff a uniform draw in [0, 2⁵³) < ⌊q·2⁵³⌋.
GRID_BITS = 53
_SYSTEM_RANDOM = random.SystemRandom()


def inclusion_threshold(sample_rate: float) -> int:
    """⌊q·2⁵³⌋: the realised inclusion probability is this / 2⁵³, within 2⁻⁵³ of q and never
    above it, so the accountant's q is an upper bound (float32 ``torch.rand`` would round q to
    the 2⁻²⁴ grid, and ``rand < q`` can realise a q larger than the one accounted)."""
    return math.floor(math.ldexp(sample_rate, GRID_BITS))  # exact: scaling by a power of 2


def _os_uniform_ints(n: int) -> Tensor:
    """n independent uniform integers in [0, 2⁵³) straight from ``os.urandom`` (no PRNG)."""
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    raw = torch.frombuffer(bytearray(os.urandom(8 * n)), dtype=torch.int64)
    return torch.bitwise_and(raw, 2**GRID_BITS - 1)


class PoissonBatch(dict[str, Any]):
    """A collated logical batch (a dict) plus which sampled unit each example belongs to.

    Attributes:
        unit_index: (B,) long tensor, example → unit position ``0..num_units-1``; a unit's
            examples are contiguous.
        num_units: number of sampled units (users or examples) in this batch.
    """

    unit_index: Tensor
    num_units: int


class PoissonTupleBatch(tuple[Any, ...]):
    """A logical batch collated as a tuple (e.g. a ``TensorDataset``'s ``(x, y)``), with the
    same ``unit_index`` and ``num_units`` as :class:`PoissonBatch`; unpacks like a tuple."""

    unit_index: Tensor
    num_units: int


def group_units(user_ids: Sequence[Hashable]) -> list[list[int]]:
    """Dataset indices grouped by user id, in order of first appearance."""
    groups: dict[Hashable, list[int]] = {}
    for index, uid in enumerate(user_ids):
        groups.setdefault(uid, []).append(index)
    return list(groups.values())


class PoissonDataLoader:
    """Yields Poisson-sampled logical batches collated by the original loader's ``collate_fn``.

    Args:
        dataset: a map-style dataset.
        collate_fn: turns a list of items into a batch: a dict of tensors, or a tuple/list of
            tensors (then the engine's ``loss_fn`` says how to read it).
        units: dataset indices of each unit (one per example, or one list per user).
        sample_rate: q, each unit's inclusion probability per logical batch.
        max_examples_per_user: cap on a sampled unit's examples (chosen at random); None = all.
        generator: the sampler's RNG (checkpointed); not used in secure mode.
        secure_mode: draw every inclusion and every per-user choice from ``os.urandom``.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        *,
        collate_fn: Callable[[list[Any]], Any],
        units: list[list[int]],
        sample_rate: float,
        max_examples_per_user: int | None = None,
        generator: torch.Generator,
        secure_mode: bool = False,
    ) -> None:
        if not 0 < sample_rate <= 1:
            raise InvalidParameterError(
                f"sample rate q = batch_size / units = {sample_rate:g} must be in (0, 1]"
            )
        if max_examples_per_user is not None and max_examples_per_user < 1:
            raise InvalidParameterError("max_examples_per_user must be ≥ 1")
        if not units:
            raise SamplingError("the data set is empty")
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.units = units
        self.sample_rate = sample_rate
        self.max_examples_per_user = max_examples_per_user
        self.generator = generator
        self.secure_mode = secure_mode
        self._empty: Any = None

    @property
    def num_units(self) -> int:
        """N, the number of units (examples or users) sampling draws from."""
        return len(self.units)

    def __len__(self) -> int:
        """Logical batches per epoch: 1/q (at least one)."""
        return max(1, round(1 / self.sample_rate))

    def __iter__(self) -> Iterator[PoissonBatch | PoissonTupleBatch]:
        for _ in range(len(self)):
            yield self.sample()

    def _empty_batch(self) -> Any:
        if self._empty is None:
            template = _checked(self.collate_fn([self.dataset[self.units[0][0]]]))
            if isinstance(template, dict):
                self._empty = {k: _empty_like(v) for k, v in template.items()}
            else:
                self._empty = tuple(_empty_like(v) for v in template)
        return dict(self._empty) if isinstance(self._empty, dict) else self._empty

    def draw(self) -> list[list[int]]:
        """Which units join the next logical batch: each joined unit's dataset indices, in order.

        Units join independently with probability ⌊q·2⁵³⌋/2⁵³ (see :func:`inclusion_threshold`);
        a joined user keeps at most ``max_examples_per_user`` of its examples, chosen uniformly.
        In secure mode both come from ``os.urandom``, else from the seeded generator.
        """
        n = len(self.units)
        if self.secure_mode:
            draws = _os_uniform_ints(n)
        else:
            draws = torch.randint(0, 2**GRID_BITS, (n,), generator=self.generator)
        joined = draws < inclusion_threshold(self.sample_rate)
        members: list[list[int]] = []
        for unit in joined.nonzero().flatten().tolist():
            chosen = self.units[unit]
            cap = self.max_examples_per_user
            if cap is not None and len(chosen) > cap:
                if self.secure_mode:
                    keep = sorted(_SYSTEM_RANDOM.sample(range(len(chosen)), cap))
                else:
                    perm = torch.randperm(len(chosen), generator=self.generator)
                    keep = perm[:cap].sort().values.tolist()
                chosen = [chosen[k] for k in keep]
            members.append(list(chosen))
        return members

    def collate(self, members: Sequence[Sequence[int]]) -> PoissonBatch | PoissonTupleBatch:
        """The batch of the given units (each a list of dataset indices), a unit's rows adjacent."""
        indices = [i for unit in members for i in unit]
        owner = [position for position, unit in enumerate(members) for _ in unit]
        if indices:
            collated = _checked(self.collate_fn([self.dataset[i] for i in indices]))
        else:
            collated = self._empty_batch()
        batch: PoissonBatch | PoissonTupleBatch
        if isinstance(collated, dict):
            batch = PoissonBatch(collated)
        else:
            batch = PoissonTupleBatch(collated)
        batch.unit_index = torch.tensor(owner, dtype=torch.long)
        batch.num_units = len(members)
        return batch

    def sample(self) -> PoissonBatch | PoissonTupleBatch:
        """Draw one logical batch (units join independently with probability q)."""
        return self.collate(self.draw())

    def state_dict(self) -> dict[str, Any]:
        """The sampler RNG state, so a resumed non-secure run draws the same batches (a secure
        sampler has no state: the generator is unused and a resumed run draws afresh)."""
        state: dict[str, Any] = {"sample_rate": self.sample_rate}
        if not self.secure_mode:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (a no-op in secure mode)."""
        if not self.secure_mode and state.get("generator") is not None:
            self.generator.set_state(state["generator"])


def _empty_like(value: Any) -> Any:
    return value[:0] if isinstance(value, Tensor) else []


def _checked(collated: Any) -> Any:
    """The collated batch if it is a dict or a tuple/list of batch-first values."""
    if isinstance(collated, dict):
        return collated
    if isinstance(collated, (tuple, list)) and collated:
        return tuple(collated)
    raise SamplingError(
        "collate_fn must return a dict of tensors or a tuple/list of tensors, got "
        f"{type(collated).__name__}"
    )


def _is_plain_loader(loader: Any) -> bool:
    """A torch DataLoader over a map-style dataset with the stock samplers and a batch size."""
    from torch.utils.data import (
        BatchSampler,
        DataLoader,
        IterableDataset,
        RandomSampler,
        SequentialSampler,
    )

    return (
        isinstance(loader, DataLoader)
        and not isinstance(loader.dataset, IterableDataset)
        and loader.batch_size is not None
        and type(loader.batch_sampler) is BatchSampler
        and type(loader.sampler) in (RandomSampler, SequentialSampler)
    )


def make_poisson_loader(
    data_loader: Any,
    *,
    user_ids: Sequence[Hashable] | None,
    by_user: bool,
    max_examples_per_user: int | None,
    generator: torch.Generator,
    secure_mode: bool,
) -> PoissonDataLoader:
    """Re-sample a stock DataLoader with Poisson sampling at q = batch_size / number of units.

    Raises:
        SamplingError: the loader cannot be re-sampled (custom sampler or batch sampler, an
            iterable data set, not a DataLoader), or user ids are missing for per-user privacy.
    """
    if isinstance(data_loader, PoissonDataLoader):
        return data_loader
    if not _is_plain_loader(data_loader):
        raise SamplingError(
            f"{type(data_loader).__name__} is not a DataLoader with a batch size and the stock "
            "random/sequential sampler, so it cannot be re-sampled with Poisson sampling, and the "
            "accountant's ε only holds for Poisson sampling; pass a plain DataLoader, or "
            "poisson_sampling=False to train anyway with an ε that is not valid"
        )
    dataset = data_loader.dataset
    if by_user:
        ids = user_ids if user_ids is not None else getattr(dataset, "user_ids", None)
        if ids is None:
            raise SamplingError(
                "privacy_unit='user' needs user_ids (one per example) or dataset.user_ids"
            )
        if len(ids) != len(dataset):
            raise SamplingError(f"{len(ids)} user ids for {len(dataset)} examples")
        units = group_units(ids)
    else:
        units = [[i] for i in range(len(dataset))]
    if not units:
        raise SamplingError("the data set is empty: Poisson sampling needs at least one unit")
    return PoissonDataLoader(
        dataset,
        collate_fn=data_loader.collate_fn,
        units=units,
        sample_rate=data_loader.batch_size / len(units),
        max_examples_per_user=max_examples_per_user if by_user else None,
        generator=generator,
        secure_mode=secure_mode,
    )
