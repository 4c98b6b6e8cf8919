"""Shared helpers of the service tests (a module, so test files can import it by name)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from privacy_finetuner.service.deps import AppContext

SIMULATED = "privacy_finetuner.service.simulate:simulated_run_job"


@dataclass
class Protected:
    text: str
    findings: list[str] = field(default_factory=list)


class FakeGuard:
    """Masks the word 'secret'; stands in for ContextGuard where it is not installed."""

    def protect(self, text: str) -> Protected:
        hits = ["secret"] * text.count("secret")
        return Protected(text=text.replace("secret", "[REDACTED]"), findings=hits)


def tiny_config(steps: int = 5, sigma: float = 1.0) -> dict[str, Any]:
    """A job config whose plan is `steps` steps at σ with q = 64/900."""
    return {
        "training": {"max_steps": steps, "batch_size": 64},
        "privacy": {"noise_multiplier": sigma, "target_epsilon": None, "delta": 1e-5},
        "data": {"synthetic": {"n": 1000}},
    }


@dataclass
class Env:
    app: FastAPI
    client: TestClient
    ctx: AppContext
    keys: dict[str, str]

    def h(self, name: str) -> dict[str, str]:
        return {"X-API-Key": self.keys[name]}
