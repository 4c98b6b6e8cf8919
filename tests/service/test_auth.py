"""API keys: 401 without/with a wrong key, 403 without the scope, tenant isolation, rate limit."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from svc_helpers import Env

PROTECTED = [
    ("GET", "/v1/datasets"),
    ("POST", "/v1/datasets"),
    ("GET", "/v1/datasets/ds_x"),
    ("GET", "/v1/datasets/ds_x/ledger"),
    ("GET", "/v1/datasets/ds_x/users/u1"),
    ("POST", "/v1/datasets/ds_x/files"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/job_x"),
    ("POST", "/v1/jobs/job_x/cancel"),
    ("GET", "/v1/jobs/job_x/report"),
    ("POST", "/v1/guard/protect"),
    ("GET", "/metrics"),
    ("GET", "/v1/audit"),
    ("POST", "/v1/keys"),
    ("GET", "/v1/keys"),
    ("DELETE", "/v1/keys/k_x"),
]


def test_every_openapi_route_is_covered(env: Env) -> None:
    spec = env.app.openapi()
    routes = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    covered = {
        (
            m,
            p.replace("ds_x", "{dataset_id}")
            .replace("job_x", "{job_id}")
            .replace("u1", "{user_id}")
            .replace("k_x", "{key_id}"),
        )
        for m, p in PROTECTED
    }
    assert routes - covered == {("GET", "/healthz"), ("GET", "/readyz")}


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_missing_and_wrong_keys_get_401(env: Env, method: str, path: str) -> None:
    assert env.client.request(method, path).status_code == 401
    bad = {"X-API-Key": "pfk_000000000000_nope"}
    assert env.client.request(method, path, headers=bad).status_code == 401
    bearer = {"Authorization": "Bearer garbage"}
    assert env.client.request(method, path, headers=bearer).status_code == 401


def test_health_needs_no_key(env: Env) -> None:
    assert env.client.get("/healthz").json() == {"status": "ok"}
    ready = env.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"


def test_scopes_give_403(env: Env) -> None:
    c = env.client
    body = {"name": "d", "budget_epsilon": 1, "budget_delta": 1e-5}
    assert c.post("/v1/datasets", json=body, headers=env.h("read")).status_code == 403
    assert c.post("/v1/guard/protect", json={"text": "x"}, headers=env.h("read")).status_code == 403
    assert c.get("/v1/datasets", headers=env.h("guard")).status_code == 403
    assert c.post("/v1/jobs", json={"dataset_id": "x"}, headers=env.h("read")).status_code == 403
    assert c.get("/metrics", headers=env.h("submit")).status_code == 403
    assert c.post("/v1/datasets", json=body, headers=env.h("admin")).status_code == 201
    assert (
        c.get("/v1/datasets", headers={"Authorization": f"Bearer {env.keys['read']}"}).json()[
            "count"
        ]
        == 1
    )


def test_tenant_isolation(env: Env) -> None:
    c = env.client
    body = {"name": "acme-chats", "budget_epsilon": 2, "budget_delta": 1e-5}
    ds = c.post("/v1/datasets", json=body, headers=env.h("admin")).json()
    assert c.get(f"/v1/datasets/{ds['id']}", headers=env.h("other")).status_code == 404
    assert c.get("/v1/datasets", headers=env.h("other")).json()["count"] == 0
    job = {"dataset_id": ds["id"], "config": {}}
    assert c.post("/v1/jobs", json=job, headers=env.h("other")).status_code == 404
    # globex may reuse the name in its own tenant
    assert c.post("/v1/datasets", json=body, headers=env.h("other")).status_code == 201
    # the operator tenant sees every data set in /metrics, a tenant admin only its own
    assert ds["id"] in c.get("/metrics", headers=env.h("ops")).text
    assert ds["id"] not in c.get("/metrics", headers=env.h("other")).text
    assert ds["id"] in c.get("/metrics", headers=env.h("admin")).text


def test_failed_auth_is_counted_and_rate_limited(make_env: Callable[..., Env]) -> None:
    env = make_env(auth_failure_limit=5, auth_failure_window_s=60)
    bad = {"X-API-Key": "pfk_abcdef012345_wrong"}
    for _ in range(5):
        assert env.client.get("/v1/datasets", headers=bad).status_code == 401
    blocked = env.client.get("/v1/datasets", headers=bad)
    assert blocked.status_code == 429 and "Retry-After" in blocked.headers
    # a valid key is verified first and never locked out by others' failures (same address)
    assert env.client.get("/v1/datasets", headers=env.h("read")).status_code == 200
    # the limit is per (client, key id): another bad key id from the same client is still 401
    other = {"X-API-Key": "pfk_0123456789ab_wrong"}
    assert env.client.get("/v1/datasets", headers=other).status_code == 401
    text = env.ctx.metrics.render()
    assert b'auth_failures_total{reason="invalid"} 6.0' in text
    assert b'auth_failures_total{reason="rate_limited"} 1.0' in text


def test_forwarded_for_is_trusted_only_from_configured_proxies(
    make_env: Callable[..., Env],
) -> None:
    """A rotating X-Forwarded-For from an untrusted peer does not reset the limit; from a
    trusted proxy it names the client, so one client's failures do not block another."""
    env = make_env(auth_failure_limit=3, auth_failure_window_s=60)
    bad = {"X-API-Key": "pfk_abcdef012345_wrong"}
    for i in range(3):
        headers = {**bad, "X-Forwarded-For": f"10.0.0.{i}"}
        assert env.client.get("/v1/datasets", headers=headers).status_code == 401
    rotated = {**bad, "X-Forwarded-For": "10.0.0.99"}
    assert env.client.get("/v1/datasets", headers=rotated).status_code == 429  # not bypassed

    proxied = make_env(
        auth_failure_limit=3, auth_failure_window_s=60, trusted_proxies=["testclient"]
    )
    for _ in range(3):
        headers = {**bad, "X-Forwarded-For": "203.0.113.7"}
        assert proxied.client.get("/v1/datasets", headers=headers).status_code == 401
    headers = {**bad, "X-Forwarded-For": "203.0.113.7"}
    assert proxied.client.get("/v1/datasets", headers=headers).status_code == 429
    headers = {**bad, "X-Forwarded-For": "198.51.100.2"}
    assert proxied.client.get("/v1/datasets", headers=headers).status_code == 401


def test_docs_and_schema_are_off_by_default(make_env: Callable[..., Env]) -> None:
    env = make_env()
    assert env.client.get("/openapi.json").status_code == 404
    assert env.client.get("/docs").status_code == 404
    on = make_env(api_docs=True)
    assert on.client.get("/openapi.json").status_code == 200


def test_revoked_key_is_refused(make_env: Callable[..., Env]) -> None:
    env = make_env(key_cache_ttl_s=0)
    key_id = env.keys["read"].split("_")[1]
    assert env.client.get("/v1/datasets", headers=env.h("read")).status_code == 200
    env.ctx.keys.revoke(key_id)
    assert env.client.get("/v1/datasets", headers=env.h("read")).status_code == 401


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    route=st.sampled_from(PROTECTED),
    key=st.one_of(st.none(), st.text(max_size=80)),
    body=st.one_of(st.none(), st.dictionaries(st.text(max_size=8), st.integers(), max_size=3)),
)
def test_fuzzed_requests_without_valid_key_are_401_never_5xx(
    env: Env, route: tuple[str, str], key: str | None, body: dict[str, int] | None
) -> None:
    """A schemathesis-style property: any request without a valid key is rejected with 401/429."""
    env.ctx.limiter._failures.clear()
    headers = {}
    if key is not None and key.isascii() and key.isprintable():
        headers["X-API-Key"] = key
    response = env.client.request(route[0], route[1], headers=headers, json=body)
    assert response.status_code in (401, 429)


def test_key_management_over_http_is_per_tenant_audited_and_expires(
    make_env: Callable[..., Env],
) -> None:
    import datetime as dt

    from sqlalchemy import update

    from privacy_finetuner.ledger.models import ApiKey

    env = make_env(key_cache_ttl_s=0)
    c = env.client
    r = c.post("/v1/keys", json={"scopes": ["read"], "expires_in_days": 30}, headers=env.h("admin"))
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["tenant"] == "acme" and new["expires_at"] is not None
    h = {"X-API-Key": new["key"]}
    assert c.get("/v1/datasets", headers=h).status_code == 200
    listed = c.get("/v1/keys", headers=env.h("admin")).json()
    assert new["id"] in {k["id"] for k in listed} and all("key" not in k for k in listed)
    assert new["id"] not in {k["id"] for k in c.get("/v1/keys", headers=env.h("other")).json()}
    # another tenant cannot revoke it
    assert c.delete(f"/v1/keys/{new['id']}", headers=env.h("other")).status_code == 404
    # expiry is enforced
    with env.ctx.db.write_session() as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.id == new["id"])
            .values(expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1))
        )
    assert c.get("/v1/datasets", headers=h).status_code == 401
    revoked = c.delete(f"/v1/keys/{new['id']}", headers=env.h("admin"))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    audit = c.get("/v1/audit", headers=env.h("admin")).json()["items"]
    assert {"key.create", "key.revoke"} <= {a["action"] for a in audit}
