"""The service helper: skip when a service is missing, fail under PF_REQUIRE_SERVICES=1."""

from __future__ import annotations

import pytest

from privacy_finetuner.service.testing import require_service


def test_missing_service_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PF_REQUIRE_SERVICES", raising=False)
    monkeypatch.delenv("TEST_NOPE_URL", raising=False)
    with pytest.raises(pytest.skip.Exception, match="TEST_NOPE_URL is not set"):
        require_service("TEST_NOPE_URL")


def test_missing_service_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PF_REQUIRE_SERVICES", "1")
    monkeypatch.delenv("TEST_NOPE_URL", raising=False)
    with pytest.raises(pytest.fail.Exception, match="PF_REQUIRE_SERVICES=1"):
        require_service("TEST_NOPE_URL")


def test_unreachable_service_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PF_REQUIRE_SERVICES", "1")
    monkeypatch.setenv("TEST_NOPE_REDIS_URL", "redis://127.0.0.1:1/0")
    with pytest.raises(pytest.fail.Exception, match="unreachable"):
        require_service("TEST_NOPE_REDIS_URL")
