"""Bounded, fast admission and the operator-locked policy: hostile submissions get a quick 4xx."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from svc_helpers import Env, tiny_config

from privacy_finetuner.ledger.models import Job


def _ds(env: Env) -> str:
    body = {"name": f"d{time.monotonic_ns()}", "budget_epsilon": 1e3, "budget_delta": 1e-5}
    r = env.client.post("/v1/datasets", json=body, headers=env.h("admin"))
    assert r.status_code == 201
    return str(r.json()["id"])


def _submit(env: Env, ds: str, config: dict[str, Any]) -> Any:
    return env.client.post(
        "/v1/jobs", json={"dataset_id": ds, "config": config}, headers=env.h("submit")
    )


def _merge(base: dict[str, Any], **sections: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) for k, v in base.items()}
    for name, part in sections.items():
        out[name] = {**out.get(name, {}), **part}
    return out


@pytest.mark.parametrize(
    ("section", "part", "key"),
    [
        ("training", {"max_steps": 1_000_000_000}, "training.max_steps"),
        ("privacy", {"noise_multiplier": 1e9}, "privacy.noise_multiplier"),
        ("training", {"batch_size": 10**9}, "training.batch_size"),
        ("model", {"tiny": {"intermediate_size": 10**9}}, "model.tiny.intermediate_size"),
        ("training", {"max_steps": None, "epochs": 10**6}, "training.epochs"),
    ],
)
def test_hostile_sizes_are_422_quickly(env: Env, section: str, part: Any, key: str) -> None:
    ds = _ds(env)
    start = time.monotonic()
    r = _submit(env, ds, _merge(tiny_config(5), **{section: part}))
    elapsed = time.monotonic() - start
    assert r.status_code == 422, r.text
    assert key in r.text and elapsed < 5.0  # refused by bounds, no ε computed (1e9 steps hung)
    with env.ctx.db.read_session() as session:
        assert session.query(Job).count() == 0  # nothing reserved


def test_costly_plan_times_out_with_4xx_while_the_api_answers(
    make_env: Callable[..., Env],
) -> None:
    """σ = 0.3 over 10⁵ steps takes ~10 s of PLD: refused at the time limit, /healthz stays up."""
    env = make_env(admission_timeout_s=30.0)
    ds = _ds(env)
    assert _submit(env, ds, tiny_config(2)).status_code == 202
    from privacy_finetuner.service.admission import shared_pool

    assert shared_pool()._ready.wait(180)  # the killable worker processes are up
    env.ctx.settings.admission_timeout_s = 0.5
    result: dict[str, Any] = {}

    def hostile() -> None:
        start = time.monotonic()
        result["r"] = _submit(env, ds, tiny_config(100_000, sigma=0.3))
        result["s"] = time.monotonic() - start

    thread = threading.Thread(target=hostile)
    thread.start()
    time.sleep(0.1)
    latencies = []
    while thread.is_alive():
        start = time.monotonic()
        assert env.client.get("/healthz").status_code == 200
        latencies.append(time.monotonic() - start)
        time.sleep(0.02)
    thread.join()
    assert result["r"].status_code == 422 and "could not be accounted" in result["r"].text
    assert result["s"] < 2.0
    assert latencies and max(latencies) < 0.5
    # the killed workers are replaced in the background; then plans are accounted again
    assert shared_pool()._ready.wait(180)
    env.ctx.settings.admission_timeout_s = 10.0
    assert _submit(env, ds, tiny_config(3)).status_code == 202


@pytest.mark.parametrize(
    ("section", "part", "key"),
    [
        ("guard", {"enabled": False}, "guard.enabled"),
        ("privacy", {"secure_mode": False}, "privacy.secure_mode"),
        ("data", {"validation_split": 0.99}, "data.validation_split"),
    ],
)
def test_locked_keys_are_422_naming_the_key(env: Env, section: str, part: Any, key: str) -> None:
    r = _submit(env, _ds(env), _merge(tiny_config(3), **{section: part}))
    assert r.status_code == 422 and key in r.text and "locked" in r.text


def test_policy_is_applied_after_the_merge(make_env: Callable[..., Env], tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(
        "guard: {enabled: false}\n"  # even the operator's base cannot undo a locked key
        "server_policy:\n  locked: {training.eval_every: 7}\n  bounds: {training.max_steps: 50}\n"
    )
    env = make_env(privacy_config=base)
    ds = _ds(env)
    ok = _submit(env, ds, tiny_config(3))
    assert ok.status_code == 202, ok.text
    with env.ctx.db.read_session() as session:
        job = session.get(Job, ok.json()["id"])
    assert job is not None
    assert job.config["guard"]["enabled"] is True and job.config["privacy"]["secure_mode"] is True
    assert job.config["training"]["eval_every"] == 7
    over = _submit(env, ds, tiny_config(51))
    assert over.status_code == 422 and "training.max_steps" in over.text


def test_operator_may_allow_insecure_jobs(make_env: Callable[..., Env]) -> None:
    env = make_env(allow_insecure_jobs=True)
    r = _submit(env, _ds(env), _merge(tiny_config(3), privacy={"secure_mode": False}))
    assert r.status_code == 202, r.text


def test_request_validation_422_does_not_echo_values(env: Env) -> None:
    body = {"name": "x", "budget_epsilon": "SECRET-VALUE-42", "budget_delta": 1e-5}
    r = env.client.post("/v1/datasets", json=body, headers=env.h("admin"))
    assert r.status_code == 422
    assert "budget_epsilon" in r.text and "SECRET-VALUE-42" not in r.text


def test_sqlite_file_is_created_private(env: Env, settings: Any) -> None:
    path = Path(settings.database_url.removeprefix("sqlite:///"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_sentry_events_are_scrubbed() -> None:
    from privacy_finetuner.service.app import scrub_event

    event = {
        "request": {"headers": {"X-Api-Key": "pfk_abc123_secretsecret", "Accept": "x"}},
        "exception": {
            "values": [
                {
                    "value": "connect postgresql://pf:hunter2@db/pf failed for pfk_abc123_s3cr3t",
                    "stacktrace": {"frames": [{"vars": {"presented": "pfk_abc123_s3cr3t"}}]},
                }
            ]
        },
    }
    text = repr(scrub_event(event))
    assert "hunter2" not in text and "s3cr3t" not in text and "secretsecret" not in text
    assert "Accept" in text
