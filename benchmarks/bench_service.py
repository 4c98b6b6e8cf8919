#!/usr/bin/env python3
"""Load benchmark of the privacy-finetuner service, from a second process on loopback only.

    python benchmarks/bench_service.py                       # both scenarios, table
    python benchmarks/bench_service.py --json --duration 10  # one JSON object

1. ``guard``: ``POST /v1/guard/protect`` with 1 KB texts full of PII, from ``--concurrency`` (32)
   keep-alive clients for ``--duration`` seconds against ``privacy-finetuner serve --workers 2``
   (SQLite, access log on). Targets: ≥ 500 requests/s, p99 ≤ 50 ms, zero 5xx.
2. ``submissions``: ``--submissions`` (100) concurrent ``POST /v1/jobs`` against one data set whose
   budget fits exactly 10 of them, on PostgreSQL (TEST_POSTGRES_URL / --postgres-url; a throw-away
   schema). Jobs go to a Redis queue nobody consumes when TEST_REDIS_URL is set, so only admission
   is measured. Targets: the budget is never exceeded; every accepted job is in the ledger.
3. ``hostile``: ``--hostile`` (10) concurrent submissions whose ε costs ~10 s of PLD each
   (σ ≈ 0.3 over 10⁵ steps) plus one with ``max_steps: 10⁹``, against one server worker
   (SQLite, ``PF_ADMISSION_TIMEOUT=0.8``), while a client polls ``/healthz``. Targets: every
   hostile submission answered 4xx in under 1 s; ``/healthz`` p99 under 50 ms meanwhile.

The server binds 127.0.0.1 only; the client is a minimal asyncio HTTP/1.1 client (cheaper than
httpx, so the load generator steals less CPU from the server on a small machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
NAMES = ["Jane Doe", "Ahmed Khan", "Maria Garcia", "Li Wei", "Olga Petrova", "John Smith"]


def one_kb_text(i: int) -> str:
    """About 1 KB of agent-transcript text with names, e-mails, phones and an IBAN."""
    name = NAMES[i % len(NAMES)]
    user = name.lower().replace(" ", ".")
    parts = [
        f"User {name} wrote: please update my address, my email is {user}@example.com ",
        f"and my phone is +1 415 555 {1000 + i % 9000:04d}. ",
        "The assistant called lookup_customer with the account id and found two open tickets. ",
        f"Refund to IBAN DE89 3704 0044 0532 0130 00 was requested by {name}. ",
        "The agent summarised the conversation and scheduled a follow-up call for next week. ",
    ]
    text = "".join(parts)
    while len(text) < 1024:
        text += "Nothing else of note happened in this part of the trace. "
    return text[:1024]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        assert self.reader is not None
        head = [
            f"{method} {path} HTTP/1.1",
            f"Host: {HOST}:{self.port}",
            f"Content-Length: {len(body)}",
            "Content-Type: application/json",
        ]
        head += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        payload = await self.reader.readexactly(length)
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def start_server(
    env: dict[str, str], port: int, workers: int, log: Path
) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "privacy_finetuner",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=1) as s:
                s.sendall(
                    f"GET /readyz HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
                )
                if b" 200 " in s.recv(200):
                    time.sleep(1.0 if workers > 1 else 0.2)  # let every worker finish booting
                    return proc
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"server did not start; see {log}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def make_key(env: dict[str, str], scopes: str) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "privacy_finetuner",
            "keys",
            "create",
            "--tenant",
            "bench",
            "--scopes",
            scopes,
            "--json",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return str(json.loads(out.stdout)["key"])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


async def guard_load(
    port: int, key: str, concurrency: int, duration: float, max_requests: int
) -> dict[str, Any]:
    bodies = [json.dumps({"text": one_kb_text(i)}).encode() for i in range(64)]
    headers = {"X-API-Key": key}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop_at = 0.0
    sent = 0

    async def client(n: int, measure: bool) -> None:
        nonlocal sent
        conn = Conn(port)
        i = n
        try:
            while time.perf_counter() < stop_at and (not measure or sent < max_requests):
                if measure:
                    sent += 1
                t0 = time.perf_counter()
                status, _ = await conn.request(
                    "POST", "/v1/guard/protect", bodies[i % len(bodies)], headers
                )
                if measure:
                    latencies.append(time.perf_counter() - t0)
                    statuses[status] = statuses.get(status, 0) + 1
                i += concurrency
        finally:
            conn.close()

    stop_at = time.perf_counter() + 2.0  # warm-up, not measured
    await asyncio.gather(*(client(n, False) for n in range(concurrency)))
    start = time.perf_counter()
    stop_at = start + duration
    await asyncio.gather(*(client(n, True) for n in range(concurrency)))
    elapsed = time.perf_counter() - start
    total = len(latencies)
    return {
        "requests": total,
        "seconds": elapsed,
        "requests_per_s": total / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * percentile(latencies, 95),
        "p99_ms": 1000 * percentile(latencies, 99),
        "max_ms": 1000 * max(latencies),
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
        "errors_5xx": sum(v for k, v in statuses.items() if k >= 500),
        "non_200": sum(v for k, v in statuses.items() if k != 200),
    }


def run_guard(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp / 'guard.db'}",
        "PF_LOG_LEVEL": "INFO",
        "PF_RUNS_DIR": str(tmp / "runs"),
    }
    for var in ("REDIS_URL", "PF_DATABASE_SCHEMA", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(var, None)
    key = make_key(env, "guard")
    port = free_port()
    server = start_server(env, port, args.workers, tmp / "guard-server.log")
    try:
        result = asyncio.run(
            guard_load(port, key, args.concurrency, args.duration, args.max_requests)
        )
    finally:
        stop_server(server)
    result["concurrency"] = args.concurrency
    result["server_workers"] = args.workers
    result["pass"] = (
        result["requests_per_s"] >= 500 and result["p99_ms"] <= 50 and result["errors_5xx"] == 0
    )
    return result


SUBMIT_CONFIG = {
    "training": {"max_steps": 50, "batch_size": 10},
    "privacy": {"noise_multiplier": 1.0, "target_epsilon": None, "delta": 1e-5},
}


def run_submissions(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    pg = args.postgres_url or os.environ.get("TEST_POSTGRES_URL")
    if not pg:
        return {"skipped": "set TEST_POSTGRES_URL or --postgres-url"}
    from privacy_finetuner.accounting import DpSegment
    from privacy_finetuner.ledger import Database, Ledger, epsilon_of, verify_ledger
    from privacy_finetuner.ledger.budget import counts_from_segments

    schema = f"pf_bench_{os.getpid()}_{secrets.token_hex(3)}"
    redis_url = args.redis_url or os.environ.get("TEST_REDIS_URL")
    env = {
        **os.environ,
        "DATABASE_URL": pg,
        "PF_DATABASE_SCHEMA": schema,
        "PF_RUNS_DIR": str(tmp / "runs"),
        "PF_LOG_LEVEL": "WARNING",
        "PF_QUEUE_NAME": f"{schema}_q",
        "PF_JOB_FUNCTION": "privacy_finetuner.service.simulate:simulated_run_job",
    }
    if redis_url:
        env["REDIS_URL"] = redis_url
    else:
        env.pop("REDIS_URL", None)
    db = Database(pg, schema=schema)
    try:
        key = make_key(env, "admin")
        # budget that fits exactly `fit` planned jobs (admission grid), q = 10 / n
        n = 1000
        segment = DpSegment(noise_multiplier=1.0, sample_rate=10 / n, steps=50)
        fit = 10
        budget = epsilon_of(counts_from_segments([segment] * fit), delta=1e-5, precise=False)
        port = free_port()
        server = start_server(env, port, args.workers, tmp / "submit-server.log")
        try:

            async def go() -> tuple[list[int], list[float], str]:
                conn = Conn(port)
                status, body = await conn.request(
                    "POST",
                    "/v1/datasets",
                    json.dumps(
                        {
                            "name": "bench-shared",
                            "budget_epsilon": budget + 1e-9,
                            "budget_delta": 1e-5,
                            "num_units": n,
                        }
                    ).encode(),
                    {"X-API-Key": key},
                )
                conn.close()
                if status != 201:
                    raise SystemExit(f"data set registration failed: {status} {body[:200]!r}")
                ds_id = json.loads(body)["id"]
                payload = json.dumps({"dataset_id": ds_id, "config": SUBMIT_CONFIG}).encode()
                gate = asyncio.Event()
                lat: list[float] = []

                async def submit() -> int:
                    c = Conn(port)
                    await gate.wait()
                    t0 = time.perf_counter()
                    st, _ = await c.request("POST", "/v1/jobs", payload, {"X-API-Key": key})
                    lat.append(time.perf_counter() - t0)
                    c.close()
                    return st

                tasks = [asyncio.create_task(submit()) for _ in range(args.submissions)]
                await asyncio.sleep(0.2)
                gate.set()
                return list(await asyncio.wait_for(asyncio.gather(*tasks), 300)), lat, ds_id

            t0 = time.perf_counter()
            codes, lat, ds_id = asyncio.run(go())
            elapsed = time.perf_counter() - t0
        finally:
            stop_server(server)
        status = Ledger(db).budget(ds_id)
        verified = verify_ledger(db, dataset_id=ds_id)
        from sqlalchemy import func, select

        from privacy_finetuner.ledger import Job, LedgerEntry

        with db.read_session() as session:
            jobs = session.scalar(
                select(func.count()).select_from(Job).where(Job.dataset_id == ds_id)
            )
            reserves = session.scalar(
                select(func.count())
                .select_from(LedgerEntry)
                .where(LedgerEntry.dataset_id == ds_id, LedgerEntry.kind == "reserve")
            )
        accepted = codes.count(202)
        result = {
            "submissions": args.submissions,
            "accepted": accepted,
            "refused_409": codes.count(409),
            "other_status": len(codes) - accepted - codes.count(409),
            "expected_accepted": fit,
            "budget_epsilon": budget,
            "committed_epsilon": status.committed_epsilon,
            "jobs_in_db": jobs,
            "reserve_entries": reserves,
            "ledger_verified": verified.ok,
            "seconds": elapsed,
            "p50_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * percentile(lat, 99),
            "queue": "redis (not consumed)" if redis_url else "in-process",
        }
        result["pass"] = (
            status.committed_epsilon <= budget + 1e-9
            and accepted == jobs == reserves
            # On Redis nothing consumes the queue, so exactly `fit` reservations fit. In-process,
            # jobs run and release their unspent reservations, so more may be admitted later.
            and (accepted == fit if redis_url else accepted >= fit)
            and verified.ok
            and result["other_status"] == 0
        )
        return result
    finally:
        db.drop_schema()
        db.dispose()
        if redis_url:
            import redis

            client = redis.Redis.from_url(redis_url)
            for k in client.scan_iter(match=f"*{schema}*"):
                client.delete(k)
            client.close()


def run_hostile(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp / 'hostile.db'}",
        "PF_RUNS_DIR": str(tmp / "runs"),
        "PF_LOG_LEVEL": "WARNING",
        "PF_LOG_REQUESTS": "false",
        "PF_ADMISSION_TIMEOUT": "0.8",
        "PF_JOB_FUNCTION": "privacy_finetuner.service.simulate:simulated_run_job",
    }
    env.pop("REDIS_URL", None)
    key = make_key(env, "admin")
    port = free_port()
    server = start_server(env, port, 1, tmp / "hostile-server.log")
    try:

        async def go() -> dict[str, Any]:
            conn = Conn(port)
            body = {"name": "hostile", "budget_epsilon": 1e3, "budget_delta": 1e-5}
            status, raw = await conn.request(
                "POST", "/v1/datasets", json.dumps(body).encode(), {"X-API-Key": key}
            )
            if status != 201:
                raise SystemExit(f"data set registration failed: {status} {raw[:200]!r}")
            ds_id = json.loads(raw)["id"]
            fine = {"dataset_id": ds_id, "config": SUBMIT_CONFIG}
            await asyncio.sleep(args.warmup)  # the admission worker processes start
            conn.close()
            conn = Conn(port)  # the idle keep-alive connection was closed meanwhile
            status, raw = await conn.request(
                "POST", "/v1/jobs", json.dumps(fine).encode(), {"X-API-Key": key}
            )
            if status != 202:
                raise SystemExit(f"a normal submission failed: {status} {raw[:200]!r}")
            payloads = [
                {
                    "dataset_id": ds_id,
                    "config": {
                        "training": {"max_steps": 100_000, "batch_size": 64},
                        "privacy": {"noise_multiplier": 0.3 + 0.001 * i, "target_epsilon": None},
                    },
                }
                for i in range(args.hostile)
            ]
            payloads.append(
                {"dataset_id": ds_id, "config": {"training": {"max_steps": 1_000_000_000}}}
            )
            health: list[float] = []
            done = asyncio.Event()

            async def poll() -> None:
                c = Conn(port)
                while not done.is_set():
                    t0 = time.perf_counter()
                    await c.request("GET", "/healthz", b"", {})
                    health.append(time.perf_counter() - t0)
                    await asyncio.sleep(0.01)
                c.close()

            async def hostile(payload: dict[str, Any]) -> tuple[int, float]:
                c = Conn(port)
                t0 = time.perf_counter()
                st, _ = await c.request(
                    "POST", "/v1/jobs", json.dumps(payload).encode(), {"X-API-Key": key}
                )
                c.close()
                return st, time.perf_counter() - t0

            poller = asyncio.create_task(poll())
            await asyncio.sleep(0.3)
            answers = await asyncio.wait_for(asyncio.gather(*map(hostile, payloads)), 120)
            await asyncio.sleep(0.5)
            done.set()
            await poller
            conn.close()
            return {"answers": answers, "health": health}

        out = asyncio.run(go())
    finally:
        stop_server(server)
    codes = [st for st, _ in out["answers"]]
    seconds = [t for _, t in out["answers"]]
    result = {
        "hostile_submissions": len(codes),
        "statuses": sorted(set(codes)),
        "max_answer_s": max(seconds),
        "median_answer_s": statistics.median(seconds),
        "healthz_requests": len(out["health"]),
        "healthz_p50_ms": 1000 * statistics.median(out["health"]),
        "healthz_p99_ms": 1000 * percentile(out["health"], 99),
    }
    result["pass"] = (
        all(400 <= c < 500 for c in codes)
        and result["max_answer_s"] < 1.0
        and result["healthz_p99_ms"] < 50.0
    )
    return result


def print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="privacy-finetuner service benchmark (loopback, second process)")
    table.add_column("scenario")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("target")
    g = results.get("guard")
    if g:
        table.add_row(
            "guard/protect 1 KB",
            "clients × server workers",
            f"{g['concurrency']} × {g['server_workers']}",
            "32 × 2",
        )
        table.add_row("", "requests", str(g["requests"]), "")
        table.add_row("", "throughput", f"{g['requests_per_s']:.0f} req/s", "≥ 500 req/s")
        table.add_row("", "p50 / p95", f"{g['p50_ms']:.1f} / {g['p95_ms']:.1f} ms", "")
        table.add_row("", "p99", f"{g['p99_ms']:.1f} ms", "≤ 50 ms")
        table.add_row("", "5xx", str(g["errors_5xx"]), "0")
        table.add_row("", "verdict", "PASS" if g["pass"] else "FAIL", "")
    s = results.get("submissions")
    if s and "skipped" in s:
        table.add_row("100 submissions (PG)", "skipped", s["skipped"], "")
    elif s:
        table.add_row("concurrent submissions (PG)", "submitted", str(s["submissions"]), "")
        table.add_row(
            "",
            "accepted / refused (409)",
            f"{s['accepted']} / {s['refused_409']}",
            f"{s['expected_accepted']} fit",
        )
        table.add_row(
            "",
            "committed ε / budget ε",
            f"{s['committed_epsilon']:.4f} / {s['budget_epsilon']:.4f}",
            "≤ budget",
        )
        table.add_row(
            "",
            "jobs in DB / reserve entries",
            f"{s['jobs_in_db']} / {s['reserve_entries']}",
            "= accepted",
        )
        table.add_row("", "ledger verified", str(s["ledger_verified"]), "True")
        table.add_row(
            "",
            "wall / p50 / p99",
            f"{s['seconds']:.1f} s / {s['p50_ms']:.0f} / {s['p99_ms']:.0f} ms",
            "",
        )
        table.add_row("", "verdict", "PASS" if s["pass"] else "FAIL", "")
    h = results.get("hostile")
    if h:
        table.add_row("hostile submissions", "in flight", str(h["hostile_submissions"]), "10 + 1")
        table.add_row("", "statuses", ", ".join(map(str, h["statuses"])), "4xx")
        table.add_row(
            "",
            "answer median / max",
            f"{h['median_answer_s']:.2f} / {h['max_answer_s']:.2f} s",
            "< 1 s",
        )
        table.add_row(
            "",
            "/healthz p50 / p99",
            f"{h['healthz_p50_ms']:.1f} / {h['healthz_p99_ms']:.1f} ms",
            "p99 < 50 ms",
        )
        table.add_row("", "verdict", "PASS" if h["pass"] else "FAIL", "")
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenario", choices=["all", "guard", "submissions", "hostile"], default="all"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="Measured seconds (guard).")
    parser.add_argument("--max-requests", type=int, default=50_000, help="Cap on guard requests.")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes.")
    parser.add_argument("--submissions", type=int, default=100)
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--hostile", type=int, default=10, help="Costly submissions in flight.")
    parser.add_argument(
        "--warmup", type=float, default=15.0, help="Seconds for the admission workers to start."
    )
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pf-bench-") as tmp:
        try:  # a cheaper event loop for the load generator, when installed
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        if args.scenario in ("all", "guard"):
            results["guard"] = run_guard(args, Path(tmp))
        if args.scenario in ("all", "submissions"):
            results["submissions"] = run_submissions(args, Path(tmp))
        if args.scenario in ("all", "hostile"):
            results["hostile"] = run_hostile(args, Path(tmp))
    results["cpus"] = os.cpu_count()
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    else:
        print_table(results)
    ok = all(r.get("pass", True) for r in results.values() if isinstance(r, dict))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
