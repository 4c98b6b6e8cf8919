"""Data-parallel DP-SGD on ``torch.distributed``: one logical Poisson batch, split across ranks.

DistributedDataParallel averages each rank's *unclipped* gradient, which is useless for DP-SGD:
clipping needs each unit's own gradient, and the noise must be added exactly once to the sum.
So this module replaces DDP's gradient all-reduce with a DP-aware one:

1. Rank 0 (:data:`SAMPLING_RANK`) draws the logical batch with its Poisson sampler and broadcasts
   the chosen units, so the ranks agree even in secure mode, where every draw comes from a fresh
   OS-seeded generator that the other ranks could not reproduce.
2. Every rank takes a disjoint, contiguous share of those units (a user is never split, so its
   norm is still computed over all its examples) and computes its clipped sum as usual.
3. Rank 0 (:data:`NOISE_RANK`) adds N(0, σ²C²) to *its* share; then one all-reduce (SUM) gives
   every rank Σ clipped + noise, the same sum the single-process engine noises: the noise is
   drawn once per logical step in total, not once per rank.
4. Every rank divides by the same expected batch size q·N, steps its optimizer and records the
   same accountant step, so the replicas stay identical and agree on ``budget_exhausted``.

The replicas start identical too: :func:`broadcast_module` copies rank 0's parameters and buffers.
Control messages (the batch, decisions, errors) are small CPU tensors; with CUDA the process
group is ``cpu:gloo,cuda:nccl`` so they go over gloo while gradients on the GPU use NCCL.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from privacy_finetuner.engine.sampler import PoissonBatch, PoissonDataLoader, PoissonTupleBatch
from privacy_finetuner.errors import EngineError

__all__ = [
    "NOISE_RANK",
    "SAMPLING_RANK",
    "DataParallel",
    "DistributedPoissonLoader",
    "agree",
    "all_gather_bytes",
    "all_reduce_sum_",
    "broadcast_bytes",
    "broadcast_int",
    "broadcast_module",
    "close_process_group",
    "data_parallel_from_environment",
    "shard_units",
]

#: The rank whose sampler draws every logical batch.
SAMPLING_RANK = 0
#: The rank that adds the Gaussian noise (once per logical step, before the all-reduce).
NOISE_RANK = 0

_BUCKET_ELEMENTS = 1 << 25  # 32 Mi elements (128 MiB in fp32) per all-reduce call


@dataclass(frozen=True)
class DataParallel:
    """Where this process stands in a data-parallel run.

    Attributes:
        rank: this process's rank, ``0..world_size-1``.
        world_size: number of processes (replicas).
        group: the process group (None: the default group).
        control_device: where small control tensors live (CPU unless the group is NCCL only).
    """

    rank: int
    world_size: int
    group: Any = None
    control_device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """True on rank 0: the rank that samples, draws the noise and writes every file."""
        return self.rank == 0

    @classmethod
    def from_process_group(cls, group: Any = None) -> DataParallel:
        """Describe an already initialised process group (e.g. one a test or script set up)."""
        if not (dist.is_available() and dist.is_initialized()):
            raise EngineError("torch.distributed is not initialised")
        backend = str(dist.get_backend(group))
        device = torch.device("cpu")
        if "gloo" not in backend and torch.cuda.is_available():
            device = torch.device("cuda", torch.cuda.current_device())
        return cls(
            rank=dist.get_rank(group),
            world_size=dist.get_world_size(group),
            group=group,
            control_device=device,
        )


def _env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as exc:
        raise EngineError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from exc


@contextlib.contextmanager
def data_parallel_from_environment(
    timeout: timedelta | None = None,
) -> Iterator[DataParallel | None]:
    """The data-parallel context of this process, or None for a single-process run.

    Uses a process group that is already initialised (world size > 1); otherwise, when launched
    by torchrun (``WORLD_SIZE`` > 1, with ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``),
    initialises one — gloo on CPU; ``cpu:gloo,cuda:nccl`` with the device ``LOCAL_RANK`` when
    CUDA is available — and destroys it on exit.

    Raises:
        EngineError: torch.distributed is unavailable, or the torchrun variables are inconsistent.
    """
    if dist.is_available() and dist.is_initialized():
        yield DataParallel.from_process_group() if dist.get_world_size() > 1 else None
        return
    if _env_world_size() <= 1:
        yield None
        return
    if not dist.is_available():
        raise EngineError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise EngineError(
            f"WORLD_SIZE > 1 but {', '.join(missing)} not set; launch with torchrun "
            "(torchrun --nproc-per-node N -m privacy_finetuner train CONFIG.yaml)"
        )
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"
    kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    dist.init_process_group(backend=backend, **kwargs)
    clean = False
    try:
        yield DataParallel.from_process_group()
        clean = True
    finally:
        close_process_group(clean=clean)


def close_process_group(*, clean: bool) -> None:
    """Destroy the default group; after a clean run, only once every rank has got here.

    Without the barrier a rank that finishes first tears its gloo pairs down while a peer is
    still shutting its own down, and that peer can die with SIGABRT ("terminate called without
    an active exception"). After a failure no barrier: the other ranks may already be gone.
    """
    if clean:
        dist.barrier()
    dist.destroy_process_group()


# -- small collectives ----------------------------------------------------------------------------
def broadcast_bytes(data: bytes | None, dp: DataParallel, *, src: int = 0) -> bytes:
    """``data`` from rank ``src`` on every rank (other ranks pass None)."""
    device = dp.control_device
    size = torch.tensor([len(data) if dp.rank == src and data is not None else 0], device=device)
    dist.broadcast(size, src=src, group=dp.group)
    if dp.rank == src and data is not None:
        payload = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)
    else:
        payload = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    if payload.numel():
        dist.broadcast(payload, src=src, group=dp.group)
    return payload.cpu().numpy().tobytes()


def all_gather_bytes(data: bytes, dp: DataParallel) -> list[bytes]:
    """Every rank's ``data``, in rank order, on every rank."""
    device = dp.control_device
    size = torch.tensor([len(data)], device=device)
    sizes = [torch.zeros_like(size) for _ in range(dp.world_size)]
    dist.all_gather(sizes, size, group=dp.group)
    width = max(int(s.item()) for s in sizes)
    mine = torch.zeros(width, dtype=torch.uint8, device=device)
    if data:
        mine[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    out = [torch.zeros_like(mine) for _ in range(dp.world_size)]
    if width:
        dist.all_gather(out, mine, group=dp.group)
    return [t[: int(n.item())].cpu().numpy().tobytes() for t, n in zip(out, sizes, strict=True)]


def broadcast_int(value: int, dp: DataParallel, *, src: int = 0) -> int:
    """Rank ``src``'s ``value`` on every rank (a decision all ranks must follow)."""
    tensor = torch.tensor([value], dtype=torch.long, device=dp.control_device)
    dist.broadcast(tensor, src=src, group=dp.group)
    return int(tensor.item())


def agree(dp: DataParallel | None, error: BaseException | None) -> None:
    """Fail on every rank if any rank failed: a collective a failed rank never joins would hang.

    The failed rank re-raises its own error; the others raise :class:`EngineError` naming it.
    """
    if dp is None:
        if error is not None:
            raise error
        return
    text = "" if error is None else f"{type(error).__name__}: {error}".splitlines()[0]
    reports = all_gather_bytes(text.encode("utf-8"), dp)
    if error is not None:
        raise error
    for rank, report in enumerate(reports):
        if report:
            raise EngineError(f"rank {rank} of the data-parallel run failed: {report.decode()}")


def _buckets(tensors: Sequence[Tensor]) -> Iterator[list[Tensor]]:
    bucket: list[Tensor] = []
    size = 0
    for t in tensors:
        if bucket and size + t.numel() > _BUCKET_ELEMENTS:
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += t.numel()
    if bucket:
        yield bucket


def all_reduce_sum_(tensors: Sequence[Tensor], dp: DataParallel) -> None:
    """Sum each tensor over all ranks, in place, flattened into a few calls (one per bucket)."""
    by_kind: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
    for t in tensors:
        by_kind.setdefault((t.dtype, t.device), []).append(t)
    for group in by_kind.values():
        for bucket in _buckets(group):
            flat = torch.cat([b.reshape(-1) for b in bucket])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=dp.group)
            parts = torch.split(flat, [b.numel() for b in bucket])
            for b, part in zip(bucket, parts, strict=True):
                b.copy_(part.view_as(b))


def broadcast_module(module: nn.Module, dp: DataParallel) -> None:
    """Copy rank 0's parameters and buffers to every rank, so all replicas start identical."""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0, group=dp.group)


# -- the logical batch ----------------------------------------------------------------------------
def shard_units(members: Sequence[Sequence[int]], rank: int, world_size: int) -> list[list[int]]:
    """This rank's contiguous share of the sampled units, balanced by example count.

    A unit goes to the rank whose slice of the batch holds its middle example, so units are never
    split and every unit goes to exactly one rank.
    """
    total = sum(len(m) for m in members)
    out: list[list[int]] = []
    start = 0
    for unit in members:
        owner = min(world_size - 1, (2 * start + len(unit)) * world_size // (2 * total))
        if owner == rank:
            out.append(list(unit))
        start += len(unit)
    return out


def _broadcast_members(members: list[list[int]] | None, dp: DataParallel) -> list[list[int]]:
    device = dp.control_device
    header = torch.zeros(2, dtype=torch.long, device=device)
    if dp.rank == SAMPLING_RANK:
        if members is None:
            raise EngineError("the sampling rank has no batch to broadcast")
        header[0], header[1] = len(members), sum(len(m) for m in members)
    dist.broadcast(header, src=SAMPLING_RANK, group=dp.group)
    units, examples = int(header[0]), int(header[1])
    if dp.rank == SAMPLING_RANK and members is not None:
        flat = [len(m) for m in members] + [i for m in members for i in m]
        payload = torch.tensor(flat, dtype=torch.long, device=device)
    else:
        payload = torch.empty(units + examples, dtype=torch.long, device=device)
    if payload.numel():
        dist.broadcast(payload, src=SAMPLING_RANK, group=dp.group)
    values = payload.cpu().tolist()
    lengths, indices = values[:units], values[units:]
    out: list[list[int]] = []
    start = 0
    for n in lengths:
        out.append(indices[start : start + n])
        start += n
    return out


class DistributedPoissonLoader(PoissonDataLoader):
    """A :class:`PoissonDataLoader` whose batches are this rank's share of one logical batch.

    Rank 0 draws (its generator is the only one that matters, and the one checkpointed); every
    rank collates only its own units. ``sample`` is a collective: all ranks call it together.
    The returned batch's ``num_units`` counts this rank's units; the engine sums them over ranks.
    """

    def __init__(self, loader: PoissonDataLoader, dp: DataParallel) -> None:
        super().__init__(
            loader.dataset,
            collate_fn=loader.collate_fn,
            units=loader.units,
            sample_rate=loader.sample_rate,
            max_examples_per_user=loader.max_examples_per_user,
            generator=loader.generator,
            secure_mode=loader.secure_mode,
        )
        self.data_parallel = dp

    def sample(self) -> PoissonBatch | PoissonTupleBatch:
        """This rank's share of the next logical batch (drawn on rank 0, broadcast)."""
        dp = self.data_parallel
        members = self.draw() if dp.rank == SAMPLING_RANK else None
        everyone = _broadcast_members(members, dp)
        return self.collate(shard_units(everyone, dp.rank, dp.world_size))
