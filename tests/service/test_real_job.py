"""The real (tiny) trainer behind the service on PostgreSQL: charged = reserved, spent = planned.

Every other service test runs the simulated job, which plans with the service's own planner; this
one runs ``privacy_finetuner.training:run_job``, which recounts units from the data it loads and
checks them against the reservation before step 0 (issue 14 finding 8).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from svc_helpers import Env

from privacy_finetuner.ledger import verify_ledger
from privacy_finetuner.ledger.budget import epsilon_of
from privacy_finetuner.service.runner import context_for, execute_job
from privacy_finetuner.service.settings import Settings

pytestmark = pytest.mark.postgres


def test_real_tiny_job_charges_exactly_its_reservation(
    make_env: Callable[..., Env], pg_settings: Settings
) -> None:
    pytest.importorskip("torch")
    settings = pg_settings.model_copy(update={"job_function": "privacy_finetuner.training:run_job"})
    env = make_env(**settings.model_dump())
    body = {"name": f"real{time.monotonic_ns()}", "budget_epsilon": 50.0, "budget_delta": 1e-5}
    ds = env.client.post("/v1/datasets", json=body, headers=env.h("admin")).json()
    config: dict[str, Any] = {
        "data": {"synthetic": {"n": 120}},
        "model": {
            "tiny": {
                "hidden_size": 32,
                "num_layers": 1,
                "num_heads": 2,
                "intermediate_size": 64,
                "vocab_size": 512,
            }
        },
        "training": {"max_steps": 3, "batch_size": 16, "eval_tool_calls": 0, "device": "cpu"},
        "privacy": {"noise_multiplier": 1.2, "target_epsilon": None},
        "output": {"save_model": False, "report_html": False},
    }
    r = env.client.post(
        "/v1/jobs", json={"dataset_id": ds["id"], "config": config}, headers=env.h("submit")
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    state = execute_job(context_for(settings), job_id)
    job = env.client.get(f"/v1/jobs/{job_id}", headers=env.h("read")).json()
    assert state == "succeeded", job["error"]
    from privacy_finetuner.ledger.models import Job

    with env.ctx.db.read_session() as session:
        row = session.get(Job, job_id)
    assert row is not None
    planned = {f"{d['noise_multiplier']!r}|{d['sample_rate']!r}": d["steps"] for d in row.planned}
    print(f"real job: planned={planned} charged={row.charged}")
    assert row.charged == planned  # every step inside the reservation, nothing on top
    spent = env.client.get(f"/v1/datasets/{ds['id']}", headers=env.h("read")).json()
    assert spent["spent_epsilon"] == pytest.approx(epsilon_of(planned, delta=1e-5))
    assert verify_ledger(env.ctx.db).ok
