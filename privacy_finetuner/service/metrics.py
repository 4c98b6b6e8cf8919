"""Prometheus metrics: HTTP, authentication, jobs and privacy budget (names fixed by deploy/).

``deploy/prometheus/rules`` reads ``http_requests_total{route,status}``,
``http_request_duration_seconds``, ``auth_failures_total``, ``privacy_epsilon_spent{dataset}``,
``privacy_epsilon_budget{dataset}``, ``job_noise_multiplier{job}`` and
``process_start_time_seconds``; rename them only together with those rules.

Request metrics live in the serving process; ledger-derived gauges (ε per data set, jobs by
state, σ and C of running jobs) are read from the database at scrape time, so every server
replica reports the same numbers. With ``PROMETHEUS_MULTIPROC_DIR`` set the request metrics of
all uvicorn workers are aggregated (prometheus-client multiprocess mode).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select

from privacy_finetuner.ledger.budget import epsilon_of
from privacy_finetuner.ledger.db import Database
from privacy_finetuner.ledger.models import Dataset, Job
from privacy_finetuner.ledger.store import Ledger

__all__ = ["LedgerCollector", "ServiceMetrics"]

_log = logging.getLogger("privacy_finetuner.service.metrics")
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class _Snapshot:
    datasets: list[
        tuple[str, str, str, float, float, float]
    ]  # id, name, tenant, spent, budget, left
    jobs: list[tuple[str, str, int]]  # tenant, state, count
    running: list[tuple[str, str, str, float, float]]  # job, dataset, tenant, σ, C


class LedgerCollector:
    """Gauges computed from the ledger at scrape time (cached for ``ttl_s``), per tenant."""

    def __init__(self, db: Database, *, noise_floor: float | None = None, ttl_s: float = 5.0):
        self.db = db
        self.ledger = Ledger(db)
        self.noise_floor = noise_floor
        self.ttl_s = ttl_s
        self._cached: tuple[float, _Snapshot] | None = None
        self._lock = threading.Lock()
        #: (spent, remaining) by (data set, ledger head): a ledger whose head did not move is
        #: never recomputed (every charge, reservation and release moves the head).
        self._by_head: dict[tuple[str, str], tuple[float, float]] = {}

    def _snapshot(self) -> _Snapshot:
        """The cached snapshot; refreshed outside the lock (only changed ledgers recompute)."""
        with self._lock:
            cached = self._cached
        now = time.monotonic()
        if cached is not None and now - cached[0] <= self.ttl_s:
            return cached[1]
        snap = self._read()
        with self._lock:
            self._cached = (now, snap)
        return snap

    def _read(self) -> _Snapshot:
        with self.db.read_session() as session:
            datasets = session.scalars(select(Dataset)).all()
            jobs = session.execute(
                select(Job.tenant, Job.state, func.count()).group_by(Job.tenant, Job.state)
            ).all()
            running = session.scalars(select(Job).where(Job.state == "running")).all()
        rows = []
        fresh: dict[tuple[str, str], tuple[float, float]] = {}
        for ds in datasets:
            key = (ds.id, ds.head_hash)
            hit = self._by_head.get(key)
            if hit is None:
                spent = epsilon_of(ds.charged, delta=ds.budget_delta)
                hit = (spent, self.ledger.budget(ds.id).remaining_epsilon)
            fresh[key] = hit
            rows.append((ds.id, ds.name, ds.tenant, hit[0], ds.budget_epsilon, hit[1]))
        self._by_head = fresh
        return _Snapshot(
            datasets=rows,
            jobs=[(t, s, int(c)) for t, s, c in jobs],
            running=[
                (j.id, j.dataset_id, j.tenant, j.noise_multiplier, j.clip_norm) for j in running
            ],
        )

    def families(self, tenant: str | None) -> list[GaugeMetricFamily]:
        """The gauges, restricted to ``tenant`` (None: all tenants)."""
        try:
            snap = self._snapshot()
        except Exception:
            _log.exception("ledger metrics unavailable")
            return []
        labels = ["dataset", "name", "tenant"]
        spent = GaugeMetricFamily(
            "privacy_epsilon_spent", "ε spent per data set (PLD)", labels=labels
        )
        budget = GaugeMetricFamily("privacy_epsilon_budget", "Lifetime ε budget", labels=labels)
        remaining = GaugeMetricFamily(
            "privacy_epsilon_remaining", "ε budget left after reservations", labels=labels
        )
        jobs = GaugeMetricFamily("jobs", "Jobs by state", labels=["state"])
        sigma = GaugeMetricFamily(
            "job_noise_multiplier",
            "Noise multiplier σ of running jobs",
            labels=["job", "dataset", "tenant"],
        )
        clip = GaugeMetricFamily(
            "job_clip_norm", "Clip norm C of running jobs", labels=["job", "dataset", "tenant"]
        )
        for ds_id, name, ds_tenant, eps, total, left in snap.datasets:
            if tenant is None or ds_tenant == tenant:
                spent.add_metric([ds_id, name, ds_tenant], eps)
                budget.add_metric([ds_id, name, ds_tenant], total)
                remaining.add_metric([ds_id, name, ds_tenant], left)
        by_state = dict.fromkeys(JOB_STATES, 0)
        for job_tenant, state, count in snap.jobs:
            if tenant is None or job_tenant == tenant:
                by_state[state] = by_state.get(state, 0) + count
        for state, count in by_state.items():
            jobs.add_metric([state], float(count))
        for job_id, ds_id, job_tenant, s, c in snap.running:
            if tenant is None or job_tenant == tenant:
                sigma.add_metric([job_id, ds_id, job_tenant], s)
                clip.add_metric([job_id, ds_id, job_tenant], c)
        out = [spent, budget, remaining, jobs, sigma, clip]
        if self.noise_floor is not None:
            floor = GaugeMetricFamily("job_noise_multiplier_floor", "Configured lowest σ allowed")
            floor.add_metric([], self.noise_floor)
            out.append(floor)
        return out


class _View:
    """What one scrape sees: the request metrics plus the tenant's ledger gauges."""

    def __init__(
        self, registry: CollectorRegistry, ledger: LedgerCollector | None, tenant: str | None
    ) -> None:
        self.registry = registry
        self.ledger = ledger
        self.tenant = tenant

    def collect(self) -> Iterator[Metric]:
        if self.tenant is None:  # request counts span every tenant: the operator's only
            yield from self.registry.collect()
        if self.ledger is not None:
            yield from self.ledger.families(self.tenant)


class ServiceMetrics:
    """One registry per app (so tests can build many apps) with the request metrics."""

    def __init__(self, db: Database | None = None, *, noise_floor: float | None = None) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=False)
        # multiprocess mode: values go to mmap files, collected by MultiProcessCollector
        target: CollectorRegistry | None = None if self.multiprocess else self.registry
        self.requests = Counter(
            "http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=target,
        )
        self.errors = Counter(
            "http_request_errors",
            "HTTP 4xx/5xx responses by route and status",
            ["route", "status"],
            registry=target,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Request latency by route",
            ["route"],
            buckets=_BUCKETS,
            registry=target,
        )
        self.auth_failures = Counter(
            "auth_failures", "Failed authentications by reason", ["reason"], registry=target
        )
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        ProcessCollector(registry=self.registry)
        self.ledger = LedgerCollector(db, noise_floor=noise_floor) if db is not None else None

    def observe(self, *, route: str, method: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(route, str(status)).inc()

    def render(self, tenant: str | None = None) -> bytes:
        """The text exposition format; ledger gauges only for ``tenant`` (None: all)."""
        return generate_latest(_View(self.registry, self.ledger, tenant))
