#!/usr/bin/env python3
"""Post-deploy smoke test of the privacy-finetuner service (used by the deploy workflow).

    python scripts/smoke_test.py https://api.example.org --api-key "$SMOKE_API_KEY"

Checks health and readiness, registers a fresh ``smoke-<time>`` data set, protects a text with the
guard, runs a tiny training job to completion, then checks the job report, the data set's ledger
(hash-chained entries, charges = steps, reservation released) and ``/metrics``. The key needs the
admin, submit, read and guard scopes (an admin key has them all). Exits 0 when every check passes,
1 on the first failure (the message names the check; the key is never printed).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from typing import Any

import httpx

TINY_JOB: dict[str, Any] = {
    "data": {"synthetic": {"n": 64}, "max_length": 64},
    "training": {"max_steps": 3, "batch_size": 8, "eval_every": 100},
    "privacy": {"noise_multiplier": 1.0, "target_epsilon": None},
    "model": {
        "tiny": {
            "hidden_size": 32,
            "num_layers": 1,
            "num_heads": 2,
            "intermediate_size": 64,
            "vocab_size": 512,
            "tokenizer_corpus_size": 50,
        }
    },
    "output": {"save_model": False, "report_html": False},
}
TERMINAL = ("succeeded", "failed", "cancelled")


class SmokeFailure(Exception):
    """A check did not hold."""


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SmokeFailure(what)
    print(f"ok   {what}")


def expect(response: httpx.Response, status: int, what: str) -> Any:
    if response.status_code != status:
        raise SmokeFailure(f"{what}: HTTP {response.status_code} {response.text[:300]}")
    print(f"ok   {what}")
    return response.json() if "json" in response.headers.get("content-type", "") else response.text


def run(url: str, key: str, timeout: float) -> None:
    auth = {"X-API-Key": key}
    with httpx.Client(base_url=url.rstrip("/"), timeout=30.0) as c:
        expect(c.get("/healthz"), 200, "GET /healthz")
        expect(c.get("/readyz"), 200, "GET /readyz (database and Redis reachable)")
        check(c.get("/v1/datasets").status_code == 401, "requests without a key are refused (401)")

        name = f"smoke-{int(time.time())}"
        ds = expect(
            c.post(
                "/v1/datasets",
                headers=auth,
                json={
                    "name": name,
                    "budget_epsilon": 20.0,
                    "budget_delta": 1e-5,
                    "description": "created by scripts/smoke_test.py",
                },
            ),
            201,
            f"register data set {name}",
        )

        text = "Contact Jane Doe at jane.doe@example.com or +1 415 555 0100."
        protected = expect(
            c.post("/v1/guard/protect", headers=auth, json={"text": text}),
            200,
            "POST /v1/guard/protect",
        )
        check("jane.doe@example.com" not in protected["text"], "the guard removed the e-mail")

        job = expect(
            c.post("/v1/jobs", headers=auth, json={"dataset_id": ds["id"], "config": TINY_JOB}),
            202,
            "submit a tiny job",
        )
        deadline = time.monotonic() + timeout
        while job["state"] not in TERMINAL:
            if time.monotonic() > deadline:
                raise SmokeFailure(f"job {job['id']} still {job['state']} after {timeout:g}s")
            time.sleep(2)
            polled = c.get(f"/v1/jobs/{job['id']}", headers=auth)
            if polled.status_code != 200:
                raise SmokeFailure(f"poll job: HTTP {polled.status_code}")
            job = polled.json()
        check(job["state"] == "succeeded", f"job {job['id']} succeeded ({job.get('error')})")
        check(job["steps_done"] > 0 and job["epsilon"] > 0, "the job spent ε on DP steps")
        expect(c.get(f"/v1/jobs/{job['id']}/report", headers=auth), 200, "GET job report")

        after = expect(c.get(f"/v1/datasets/{ds['id']}", headers=auth), 200, "GET data set")
        check(after["spent_epsilon"] > 0, f"data set spent ε = {after['spent_epsilon']:.4f}")
        check(
            after["active_jobs"] == 0
            and abs(after["committed_epsilon"] - after["spent_epsilon"]) < 1e-9,
            "the job's unspent reservation was released",
        )
        entries = expect(
            c.get(f"/v1/datasets/{ds['id']}/ledger?limit=1000", headers=auth), 200, "GET ledger"
        )["items"]
        kinds = [e["kind"] for e in entries]
        check(
            kinds[:2] == ["register", "reserve"] and kinds[-1] == "release",
            "ledger: register, reserve, …, release",
        )
        check(kinds.count("charge") == job["steps_done"], "ledger: one charge per step taken")
        check(
            all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(entries)),
            "ledger entries are hash-chained",
        )

        metrics = expect(c.get("/metrics", headers=auth), 200, "GET /metrics")
        check(
            f'privacy_epsilon_spent{{dataset="{ds["id"]}"' in metrics,
            "metrics: privacy_epsilon_spent for the data set",
        )
        check(
            "http_requests_total{" in metrics
            and "http_request_duration_seconds_bucket{" in metrics,
            "metrics: request counters and latency histogram",
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="Base URL of the service, e.g. http://127.0.0.1:8000")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("SMOKE_API_KEY"),
        help="Admin API key (default: $SMOKE_API_KEY)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="Seconds for the tiny job.")
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("--api-key or SMOKE_API_KEY is required")
    try:
        run(args.url, args.api_key, args.timeout)
    except SmokeFailure as exc:
        print(f"FAIL {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"FAIL cannot reach {args.url}: {type(exc).__name__}", file=sys.stderr)
        return 1
    print("smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
