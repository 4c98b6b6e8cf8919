"""End to end: ``privacy-finetuner serve`` in a subprocess, ``scripts/smoke_test.py`` against it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from svc_helpers import SIMULATED

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_and_smoke_test(tmp_path: Path) -> None:
    pytest.importorskip("privacy_finetuner.guard")
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'smoke.db'}",
        "PF_RUNS_DIR": str(tmp_path / "runs"),
        "PF_JOB_FUNCTION": SIMULATED,
        "PF_LOG_LEVEL": "WARNING",
        "PF_OPERATOR_TENANT": "ops",  # request metrics are the operator's only
    }
    env.pop("REDIS_URL", None)
    cli = [sys.executable, "-m", "privacy_finetuner"]
    created = subprocess.run(
        [*cli, "keys", "create", "--tenant", "ops", "--scopes", "admin", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = json.loads(created.stdout)["key"]
    port = _free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [*cli, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        smoke = subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "smoke_test.py"),
                url,
                "--api-key",
                key,
                "--timeout",
                "60",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
        assert "smoke test passed" in smoke.stdout
        assert key not in smoke.stdout + smoke.stderr
        bad = subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "smoke_test.py"),
                url,
                "--api-key",
                "pfk_nope_nope",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode == 1 and "FAIL" in bad.stderr
    finally:
        server.terminate()
        server.wait(timeout=20)
    served = (tmp_path / "serve.log").read_text()
    secret = key.split("_", 2)[2]  # pfk_<id>_<secret>; the secret itself may hold "_"
    assert len(secret) >= 32 and secret not in served  # no secret in the server's logs
