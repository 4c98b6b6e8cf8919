"""Admission ε with a time limit, computed in a worker process outside any database lock.

A precise PLD composition costs from milliseconds to many seconds (low σ over 10⁵ steps took
10 s; 40 distinct (σ, q) pairs 1.7 s). Computed in the request thread under the data set's write
lock, one hostile submission held the lock and the API for minutes. Here it runs in a small pool
of spawned processes: a computation that passes the limit is killed (the pool is replaced) and
the submission is refused with a 4xx, while the API thread only waits. Results are cached by the
step multiset, so a ledger whose head did not move is never recomputed.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import multiprocessing
import threading
import time
from collections.abc import Mapping
from multiprocessing.pool import Pool
from typing import Any

from privacy_finetuner.errors import ConfigError

__all__ = ["AdmissionTimeout", "EpsilonPool", "epsilon_with_limit"]

_log = logging.getLogger("privacy_finetuner.service.admission")


class AdmissionTimeout(ConfigError):
    """The plan's ε could not be computed within the operator's time limit."""


def _compute(items: tuple[tuple[str, int], ...], delta: float) -> float:
    from privacy_finetuner.ledger.budget import epsilon_of

    return epsilon_of(dict(items), delta=delta, precise=False)


class EpsilonPool:
    """Spawned worker processes for ε; replaced (in the background) when one is killed for time.

    The time limit covers everything a submission waits for: a free worker, a pool still
    starting after a kill, and the computation itself.
    """

    def __init__(self, processes: int = 2) -> None:
        self.processes = processes
        self._pool: Pool | None = None
        self._lock = threading.Lock()
        self._starting = False
        self._ready = threading.Event()
        self._cache: dict[tuple[tuple[tuple[str, int], ...], float], float] = {}
        self._threads = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="eps")
        self._killed = False

    def _start(self) -> None:
        try:
            pool = multiprocessing.get_context("spawn").Pool(self.processes)
            # start-up (spawn, imports) is not the plan's cost: warm every worker first
            warm = [
                pool.apply_async(_compute, ((("1.0|0.01", 1),), 1e-5))
                for _ in range(self.processes)
            ]
            for pending in warm:
                pending.get(timeout=300)
        except Exception:
            _log.warning("admission workers could not be started", exc_info=True)
            with self._lock:
                self._starting = False
            return
        with self._lock:
            self._pool = pool
            self._starting = False
            self._ready.set()

    def warm_in_background(self) -> None:
        """Start (and warm) the workers without blocking the caller."""
        # the stand-in threads too: the accountant's first import alone takes about a second
        self._threads.submit(_compute, (("1.0|0.01", 1),), 1e-5)
        with self._lock:
            if self._pool is not None or self._starting:
                return
            self._starting = True
            self._ready.clear()
        threading.Thread(target=self._start, name="eps-pool-warm", daemon=True).start()

    def _get(self, wait_s: float) -> Pool | None:
        self.warm_in_background()
        self._ready.wait(wait_s)
        with self._lock:
            return self._pool

    def _kill(self, pool: Pool) -> None:
        self._killed = True
        with self._lock:
            if self._pool is pool:
                self._pool = None
                self._ready.clear()
        # terminate() joins the pool's handler threads: the refused request must not wait, and
        # the replacement is spawned now so that the next submission finds it warm
        threading.Thread(target=pool.terminate, name="eps-pool-terminate", daemon=True).start()
        self.warm_in_background()

    def epsilon(self, counts: Mapping[str, int], *, delta: float, timeout_s: float) -> float:
        """ε (admission grid) of ``counts``, or AdmissionTimeout after ``timeout_s``."""
        items = tuple(sorted((k, int(v)) for k, v in counts.items() if int(v) > 0))
        key = (items, float(delta))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        deadline = time.monotonic() + timeout_s
        pool = self._get(min(0.05, timeout_s))
        refused = AdmissionTimeout(
            f"the privacy plan could not be accounted within {timeout_s:g} s; "
            "lower training.max_steps (or epochs) or raise the noise multiplier"
        )
        if pool is None and self._killed:
            # replacing killed workers: wait for them within the limit, never fall back to
            # threads (a hostile plan would then burn the API process's CPU for seconds)
            pool = self._get(max(0.0, deadline - time.monotonic()))
            if pool is None:
                raise refused
        if pool is None:
            # the first seconds of a process, before the workers are up: two threads stand in;
            # a thread cannot be killed, so at most two such computations outlive their request
            future = self._threads.submit(_compute, items, float(delta))
            try:
                value = float(future.result(timeout=max(0.0, deadline - time.monotonic())))
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise refused from None
            self._remember(key, value)
            return value
        pending = pool.apply_async(_compute, (items, float(delta)))
        try:
            value = float(pending.get(timeout=max(0.0, deadline - time.monotonic())))
        except multiprocessing.TimeoutError:
            _log.warning("admission epsilon timed out; worker pool replaced")
            self._kill(pool)
            raise refused from None
        self._remember(key, value)
        return value

    def _remember(self, key: tuple[tuple[tuple[str, int], ...], float], value: float) -> None:
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = value

    def close(self) -> None:
        """Stop the worker processes."""
        with self._lock:
            pool, self._pool = self._pool, None
            self._ready.clear()
        if pool is not None:
            pool.terminate()


_POOL = EpsilonPool()
# stop the workers before interpreter teardown: a pool left to __del__ then fails on a
# half-destroyed multiprocessing module ("'NoneType' object has no attribute 'dumps'")
atexit.register(_POOL.close)


def epsilon_with_limit(counts: Mapping[str, int], *, delta: float, timeout_s: float) -> float:
    """ε of ``counts`` from the process-wide pool (see :class:`EpsilonPool`)."""
    return _POOL.epsilon(counts, delta=delta, timeout_s=timeout_s)


def shared_pool() -> Any:
    """The process-wide pool (tests close it)."""
    return _POOL
