"""Admission ε with a time limit, computed in a worker process outside any database lock.

A precise PLD composition costs from milliseconds to many seconds (low σ over 10⁵ steps took
10 s; 40 distinct (σ, q) pairs 1.7 s). Computed in the request thread under the data set's write
lock, one hostile submission held the lock and the API for minutes. Here it runs in a small pool
of spawned processes: a computation that passes the limit is killed (the pool is replaced) and
the submission is refused with a 4xx, while the API thread only waits. Results are cached by the
step multiset, so a ledger whose head did not move is never recomputed.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
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
    """Spawned worker processes for ε; replaced when a computation is killed for time."""

    def __init__(self, processes: int = 2) -> None:
        self.processes = processes
        self._pool: Pool | None = None
        self._lock = threading.Lock()
        self._cache: dict[tuple[tuple[tuple[str, int], ...], float], float] = {}

    def _get(self) -> Pool:
        with self._lock:
            if self._pool is None:
                pool = multiprocessing.get_context("spawn").Pool(self.processes)
                # start-up (spawn, imports) is not the plan's cost: warm every worker first
                warm = [
                    pool.apply_async(_compute, ((("1.0|0.01", 1),), 1e-5))
                    for _ in range(self.processes)
                ]
                for pending in warm:
                    pending.get(timeout=120)
                self._pool = pool
            return self._pool

    def _kill(self, pool: Pool) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        # terminate() joins the pool's handler threads; the refused request must not wait, and
        # the replacement is spawned now so that the next submission finds it warm
        threading.Thread(target=pool.terminate, name="eps-pool-terminate", daemon=True).start()
        self.warm_in_background()

    def warm_in_background(self) -> None:
        """Start (and warm) the workers without blocking the caller."""

        def warm() -> None:
            try:
                self._get()
            except Exception:
                _log.warning("admission workers could not be started", exc_info=True)

        threading.Thread(target=warm, name="eps-pool-warm", daemon=True).start()

    def epsilon(self, counts: Mapping[str, int], *, delta: float, timeout_s: float) -> float:
        """ε (admission grid) of ``counts``, or AdmissionTimeout after ``timeout_s``."""
        items = tuple(sorted((k, int(v)) for k, v in counts.items() if int(v) > 0))
        key = (items, float(delta))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        pool = self._get()
        pending = pool.apply_async(_compute, (items, float(delta)))
        try:
            value = float(pending.get(timeout=timeout_s))
        except multiprocessing.TimeoutError:
            _log.warning("admission epsilon timed out; worker pool replaced")
            self._kill(pool)
            raise AdmissionTimeout(
                f"the privacy plan could not be accounted within {timeout_s:g} s; "
                "lower training.max_steps (or epochs) or raise the noise multiplier"
            ) from None
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = value
        return value

    def close(self) -> None:
        """Stop the worker processes."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()


_POOL = EpsilonPool()


def epsilon_with_limit(counts: Mapping[str, int], *, delta: float, timeout_s: float) -> float:
    """ε of ``counts`` from the process-wide pool (see :class:`EpsilonPool`)."""
    return _POOL.epsilon(counts, delta=delta, timeout_s=timeout_s)


def shared_pool() -> Any:
    """The process-wide pool (tests close it)."""
    return _POOL
