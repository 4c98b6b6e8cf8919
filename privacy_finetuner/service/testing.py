"""Test helpers for code that needs PostgreSQL or Redis (used by ``tests/`` and the benchmark).

``require_service("TEST_POSTGRES_URL")`` returns the URL when it is set and reachable; otherwise the
test is *skipped* with the reason, or *failed* when ``PF_REQUIRE_SERVICES=1`` (CI sets it, so a
missing service can never turn the suite green by skipping).
"""

from __future__ import annotations

import os
import secrets
from typing import NoReturn

__all__ = ["REQUIRE_ENV", "require_service", "unique_name"]

REQUIRE_ENV = "PF_REQUIRE_SERVICES"


def _missing(reason: str) -> NoReturn:
    import pytest

    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: required services must be present)")
    pytest.skip(reason)


def _ping(env_var: str, url: str) -> None:
    if env_var.endswith("REDIS_URL"):
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    else:
        from sqlalchemy import create_engine

        from privacy_finetuner.ledger.db import normalise_url

        engine = create_engine(normalise_url(url), connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        finally:
            engine.dispose()


def require_service(env_var: str) -> str:
    """The URL in ``env_var`` if set and reachable; else skip (or fail under PF_REQUIRE_SERVICES)."""
    url = os.environ.get(env_var, "").strip()
    if not url:
        _missing(f"{env_var} is not set; this test needs a real service")
    try:
        _ping(env_var, url)
    except Exception as exc:  # any driver error means "not reachable"
        _missing(f"{env_var} is set but the service is unreachable: {type(exc).__name__}")
    return url


def unique_name(prefix: str = "pf_test") -> str:
    """A schema / queue / key-prefix name no parallel test run will pick."""
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
