"""Tenants confined to their own data: uploads, operator-only server paths, model allow-list."""

from __future__ import annotations

import gzip
import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from svc_helpers import Env, tiny_config

from privacy_finetuner.ledger.models import Job

TRACE = {
    "user_id": "u1",
    "messages": [
        {"role": "user", "content": "My order is late, mail me at jane@example.com"},
        {"role": "assistant", "content": "I am sorry, let me check the order."},
    ],
}


def _lines(n: int, users: int = 3) -> bytes:
    out = []
    for i in range(n):
        out.append(json.dumps({**TRACE, "user_id": f"u{i % users}"}))
    return ("\n".join(out) + "\n").encode()


def _dataset(env: Env, key: str = "admin", **extra: Any) -> Any:
    body = {"name": f"d{time.monotonic_ns()}", "budget_epsilon": 5.0, "budget_delta": 1e-5}
    return env.client.post("/v1/datasets", json={**body, **extra}, headers=env.h(key))


@pytest.fixture
def tenv(make_env: Callable[..., Env], tmp_path: Path) -> Env:
    root = tmp_path / "data-root"
    root.mkdir()
    (root / "ok.jsonl").write_bytes(_lines(4))
    return make_env(data_root=root, storage_root=tmp_path / "uploads", max_upload_bytes=4096)


def test_upload_is_validated_and_stored_in_the_tenants_own_folder(
    tenv: Env, tmp_path: Path
) -> None:
    env = tenv
    ds = _dataset(env).json()
    r = env.client.post(
        f"/v1/datasets/{ds['id']}/files", content=gzip.compress(_lines(6)), headers=env.h("admin")
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["has_data"] and body["upload"]["traces"] == 6 and body["upload"]["users"] == 3
    assert "data_path" not in body and str(tmp_path) not in r.text
    stored = list((tmp_path / "uploads").rglob("traces.jsonl"))
    assert len(stored) == 1 and ds["id"] in str(stored[0])
    assert stat.S_IMODE(os.stat(stored[0]).st_mode) == 0o600
    assert stored[0].read_bytes() == _lines(6)
    # a second upload into the same data set is refused
    again = env.client.post(
        f"/v1/datasets/{ds['id']}/files", content=_lines(1), headers=env.h("admin")
    )
    assert again.status_code == 409


def test_invalid_line_is_refused_without_its_values(tenv: Env, tmp_path: Path) -> None:
    env = tenv
    ds = _dataset(env).json()
    bad = {"user_id": "u9", "messages": [{"role": "SSN-123-45-6789", "content": "x"}]}
    payload = _lines(2) + json.dumps(bad).encode() + b"\n"
    r = env.client.post(f"/v1/datasets/{ds['id']}/files", content=payload, headers=env.h("admin"))
    assert r.status_code == 422
    assert r.json()["line"] == 3 and r.json()["code"]
    assert "SSN" not in r.text and "6789" not in r.text
    assert not list((tmp_path / "uploads").rglob("*.jsonl"))  # nothing kept
    not_json = env.client.post(
        f"/v1/datasets/{ds['id']}/files", content=b"{nope\n", headers=env.h("admin")
    )
    assert not_json.status_code == 422 and not_json.json()["code"] == "invalid_json"


def test_upload_size_is_limited_compressed_and_decompressed(tenv: Env) -> None:
    env = tenv
    ds = _dataset(env).json()
    big = _lines(60)
    assert len(big) > 4096
    r = env.client.post(f"/v1/datasets/{ds['id']}/files", content=big, headers=env.h("admin"))
    assert r.status_code == 413
    bomb = gzip.compress(big)
    assert len(bomb) < 4096  # small on the wire, too large inflated
    r = env.client.post(f"/v1/datasets/{ds['id']}/files", content=bomb, headers=env.h("admin"))
    assert r.status_code == 413


def test_tenant_b_cannot_register_read_train_on_or_probe_tenant_as_files(
    tenv: Env, tmp_path: Path
) -> None:
    env = tenv
    a = _dataset(env).json()
    up = env.client.post(f"/v1/datasets/{a['id']}/files", content=_lines(4), headers=env.h("admin"))
    assert up.status_code == 201
    a_file = str(next((tmp_path / "uploads").rglob("traces.jsonl")))
    # B registering any server path is refused the same way, existing or not
    answers = []
    for path in (
        a_file,
        "/etc/passwd",
        "/nonexistent/file.jsonl",
        str(tmp_path / "data-root/ok.jsonl"),
    ):
        r = _dataset(env, "other", data_path=path)
        answers.append((r.status_code, r.json()["detail"]))
    assert len(set(answers)) == 1 and answers[0][0] == 403
    # B cannot read, upload to or train on A's data set
    assert env.client.get(f"/v1/datasets/{a['id']}", headers=env.h("other")).status_code == 404
    r = env.client.post(f"/v1/datasets/{a['id']}/files", content=_lines(1), headers=env.h("other"))
    assert r.status_code == 404
    job = {"dataset_id": a["id"], "config": tiny_config(3)}
    assert env.client.post("/v1/jobs", json=job, headers=env.h("other")).status_code == 404


def test_operator_paths_are_confined_to_the_data_root(tenv: Env, tmp_path: Path) -> None:
    env = tenv
    outside = tmp_path / "secret.jsonl"
    outside.write_bytes(_lines(2))
    link = tmp_path / "data-root" / "escape.jsonl"
    link.symlink_to(outside)
    refused = []
    for path in (
        str(outside),
        "/etc/passwd",
        "../secret.jsonl",
        "escape.jsonl",
        "missing.jsonl",
        ".",
    ):
        r = _dataset(env, "ops", data_path=path, tenant="acme")
        refused.append((r.status_code, r.json()["detail"]))
    assert len(set(refused)) == 1 and refused[0][0] == 422  # one answer: no existence oracle
    ok = _dataset(env, "ops", data_path="ok.jsonl", tenant="acme", num_units=4)
    assert ok.status_code == 201, ok.text
    assert ok.json()["tenant"] == "acme" and ok.json()["has_data"]
    absolute = _dataset(env, "ops", data_path=str(tmp_path / "data-root" / "ok.jsonl"))
    assert absolute.status_code == 201


def test_registration_by_path_is_off_without_a_data_root(env: Env, tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_bytes(_lines(1))
    r = _dataset(env, "ops", data_path=str(tmp_path / "x.jsonl"))
    assert r.status_code == 422 and "disabled" in r.json()["detail"]


@pytest.mark.parametrize(
    "name", ["runs/../../../etc", "/etc", "./runs/job_x", "~/models", "gpt2/../x", "gpt2/x"]
)
def test_model_names_come_only_from_the_allow_list(env: Env, name: str) -> None:
    ds = _dataset(env).json()
    config = {**tiny_config(3), "model": {"name": name}}
    r = env.client.post(
        "/v1/jobs", json={"dataset_id": ds["id"], "config": config}, headers=env.h("submit")
    )
    assert r.status_code == 422 and "model.name" in r.text
    assert name not in r.text


def test_allowed_hub_model_is_accepted(make_env: Callable[..., Env]) -> None:
    env = make_env(allowed_models=["tiny", "org/model-1"])
    ds = _dataset(env).json()
    config = {**tiny_config(3), "model": {"name": "org/model-1"}}
    r = env.client.post(
        "/v1/jobs", json={"dataset_id": ds["id"], "config": config}, headers=env.h("submit")
    )
    assert r.status_code == 202, r.text


def test_job_errors_served_to_tenants_carry_no_server_paths(env: Env) -> None:
    ds = _dataset(env).json()
    job = env.client.post(
        "/v1/jobs", json={"dataset_id": ds["id"], "config": tiny_config(3)}, headers=env.h("submit")
    ).json()
    with env.ctx.db.write_session() as session:
        session.execute(
            update(Job)
            .where(Job.id == job["id"])
            .values(
                state="failed",
                active=False,
                error="FileNotFoundError: [Errno 2] No such file: '/srv/tenants/acme/traces.jsonl'",
            )
        )
    shown = env.client.get(f"/v1/jobs/{job['id']}", headers=env.h("read")).json()
    assert "/srv" not in shown["error"] and "<path>" in shown["error"]
