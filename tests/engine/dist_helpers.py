"""Run a function on N real processes joined by a gloo process group on 127.0.0.1 (no mocks).

As under torchrun, the rendezvous store lives outside the ranks: the test process hosts the
TCPStore and every rank is a client. Rank 0 hosting it (``init_method="tcp://..."``) put a store
server thread in the rank that also draws the batches and the noise, and in rare runs that rank
died with SIGABRT while the process group was being torn down.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from privacy_finetuner.engine.distributed import close_process_group


def _entry(
    rank: int, world: int, port: int, fn: Callable[..., None], args: tuple[Any, ...]
) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback: no hostname lookup
    torch.set_num_threads(1)  # two ranks on a shared 2-core box
    store = dist.TCPStore("127.0.0.1", port, world, is_master=False)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    clean = False
    try:
        fn(rank, *args)
        clean = True
    finally:
        close_process_group(clean=clean)


def run_ranks(fn: Callable[..., None], *args: Any, world: int = 2) -> None:
    """``fn(rank, *args)`` on ``world`` spawned processes; any failure fails the call."""
    store = dist.TCPStore("127.0.0.1", 0, world, is_master=True, wait_for_workers=False)
    mp.spawn(_entry, args=(world, store.port, fn, args), nprocs=world, join=True)
