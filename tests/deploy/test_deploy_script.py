"""scripts/deploy.py against a fake kubectl (kustomize renders the real overlays)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import rollback
from fake_kubectl import FakeCluster

import deploy

pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None and not os.environ.get("PF_REQUIRE_SERVICES"),
    reason="kubectl (kustomize) absent and PF_REQUIRE_SERVICES unset",
)

SECRETS = {"DATABASE_URL": "postgresql://u:s3cret@db/pf", "REDIS_URL": "redis://:pw@redis:6379/0"}


def kube(cluster: FakeCluster) -> rollback.Kubectl:
    return rollback.Kubectl("privacy-finetuner", runner=cluster)


def no_sleep(_: float) -> None:
    return None


def test_stage_puts_new_image_on_preview_slot_only(log_path: Path) -> None:
    cluster = FakeCluster.blue_green(live="blue", old="v1", new="v1")
    log = rollback.DeploymentLog(log_path)

    slot = deploy.stage(kube(cluster), log, "production", "img:v2", SECRETS, sleep=no_sleep)

    assert slot == "green"
    assert cluster.image("privacy-finetuner-api-green") == "img:v2"
    assert cluster.image("privacy-finetuner-api-blue") == "img:v1"
    assert cluster.image("privacy-finetuner-worker") == "img:v1"  # moves on switch
    assert cluster.slot("privacy-finetuner-api") == "blue"
    assert cluster.slot("privacy-finetuner-api-preview") == "green"
    assert any(
        "/services/privacy-finetuner-api-preview:http/proxy/readyz" in " ".join(c)
        for c in cluster.calls
    )
    # secrets travel on stdin only, never in argv or the log
    assert any("s3cret" in s for s in cluster.stdins)
    assert not any("s3cret" in " ".join(c) for c in cluster.calls)
    assert "s3cret" not in log_path.read_text()
    assert log.entries()[-1]["status"] == "ok"


def test_first_deploy_makes_blue_live(log_path: Path) -> None:
    cluster = FakeCluster()
    deploy.stage(
        kube(cluster),
        rollback.DeploymentLog(log_path),
        "staging",
        "img:v1",
        SECRETS,
        sleep=no_sleep,
    )
    assert cluster.slot("privacy-finetuner-api") == "blue"
    assert cluster.slot("privacy-finetuner-api-preview") == "green"
    assert cluster.image("privacy-finetuner-api-blue") == "img:v1"


def test_stage_without_secret_fails_clearly(log_path: Path) -> None:
    cluster = FakeCluster()
    with pytest.raises(rollback.DeployError, match="DATABASE_URL and REDIS_URL"):
        deploy.stage(
            kube(cluster), rollback.DeploymentLog(log_path), "staging", "img:v1", {}, sleep=no_sleep
        )


def test_stage_fails_when_preview_not_ready(log_path: Path) -> None:
    cluster = FakeCluster.blue_green()
    cluster.proxy_fail.add("/readyz")
    log = rollback.DeploymentLog(log_path)
    with pytest.raises(rollback.DeployError, match="preview slot not healthy"):
        deploy.stage(kube(cluster), log, "staging", "img:v2", SECRETS, sleep=no_sleep)
    assert log.entries()[-1]["status"] == "failed"
    assert cluster.slot("privacy-finetuner-api") == "blue"


def test_blue_green_switch_and_rollback_round_trip(log_path: Path) -> None:
    cluster = FakeCluster.blue_green(live="blue", old="v1", new="v2")
    log = rollback.DeploymentLog(log_path)
    assert deploy.switch(kube(cluster), log, "production", "img:v2") == "green"
    assert cluster.slot("privacy-finetuner-api") == "green"
    assert cluster.image("privacy-finetuner-worker") == "img:v2"
    worker = cluster.obj("deployment", "privacy-finetuner-worker")
    assert worker["metadata"]["annotations"][rollback.PREVIOUS_IMAGE_ANNOTATION] == "img:v1"
    rollback.rollback(kube(cluster), log, "production", "drill")
    assert cluster.slot("privacy-finetuner-api") == "blue"
    assert cluster.image("privacy-finetuner-worker") == "img:v1"
    assert [e["action"] for e in log.entries()] == ["switch", "rollback"]


def test_switch_refuses_unstaged_image(log_path: Path) -> None:
    cluster = FakeCluster.blue_green(live="blue", old="v1", new="v1")
    with pytest.raises(rollback.DeployError, match="run stage first"):
        deploy.switch(kube(cluster), rollback.DeploymentLog(log_path), "production", "img:v9")
    assert cluster.slot("privacy-finetuner-api") == "blue"


def _prom(cluster: FakeCluster) -> deploy.Prometheus:
    return deploy.Prometheus(kube(cluster))


def test_canary_steps_5_10_25_50_100_then_switch(log_path: Path) -> None:
    cluster = FakeCluster.blue_green(live="blue", old="v1", new="v2")
    cluster.prometheus = {
        "http_requests_total": [{"metric": {}, "value": [0, "0.001"]}],
        "histogram_quantile": [{"metric": {}, "value": [0, "0.2"]}],
    }
    log = rollback.DeploymentLog(log_path)
    slot = deploy.canary(
        kube(cluster),
        log,
        _prom(cluster),
        "production",
        "img:v2",
        0,
        deploy.CanaryThresholds(),
        sleep=no_sleep,
    )
    assert slot == "green"
    assert cluster.canary_weights == [5, 10, 25, 50, 100, 0]
    assert cluster.slot("privacy-finetuner-api") == "green"
    steps = [e["weight"] for e in log.entries() if e["action"] == "canary-step"]
    assert steps == [5, 10, 25, 50, 100]


def test_canary_aborts_on_error_rate(log_path: Path) -> None:
    cluster = FakeCluster.blue_green(live="blue", old="v1", new="v2")
    cluster.prometheus = {
        "http_requests_total": [{"metric": {}, "value": [0, "0.08"]}],
        "histogram_quantile": [{"metric": {}, "value": [0, "0.2"]}],
    }
    log = rollback.DeploymentLog(log_path)
    with pytest.raises(rollback.DeployError, match="canary aborted at 5%"):
        deploy.canary(
            kube(cluster),
            log,
            _prom(cluster),
            "production",
            "img:v2",
            0,
            deploy.CanaryThresholds(),
            sleep=no_sleep,
        )
    assert cluster.canary_weights == [5, 0]
    assert cluster.slot("privacy-finetuner-api") == "blue"
    assert log.entries()[-1]["status"] == "aborted"


def test_canary_aborts_on_latency_and_on_missing_data_when_required(log_path: Path) -> None:
    cluster = FakeCluster.blue_green(live="blue", old="v1", new="v2")
    cluster.prometheus = {
        "http_requests_total": [{"metric": {}, "value": [0, "0"]}],
        "histogram_quantile": [{"metric": {}, "value": [0, "3.5"]}],
    }
    log = rollback.DeploymentLog(log_path)
    limits = deploy.CanaryThresholds()
    with pytest.raises(rollback.DeployError, match="p95"):
        deploy.canary(
            kube(cluster), log, _prom(cluster), "production", "img:v2", 0, limits, sleep=no_sleep
        )
    cluster.prometheus = {}
    strict = deploy.CanaryThresholds(require_data=True)
    with pytest.raises(rollback.DeployError, match="no traffic data"):
        deploy.canary(
            kube(cluster), log, _prom(cluster), "production", "img:v2", 0, strict, sleep=no_sleep
        )


def test_canary_queries_select_the_slot_and_namespace() -> None:
    errors, p95 = deploy.canary_queries("privacy-finetuner", "green")
    for query in (errors, p95):
        assert 'slot="green"' in query and 'namespace="privacy-finetuner"' in query
    assert 'status=~"5.."' in errors


def test_watch_rolls_back_when_a_rollback_alert_fires(log_path: Path) -> None:
    cluster = FakeCluster.blue_green(live="green", old="v2", new="v1")
    cluster.prometheus = {
        "ALERTS": [
            {"metric": {"alertname": "PrivacyFinetunerRollbackErrorRate"}, "value": [0, "1"]}
        ]
    }
    log = rollback.DeploymentLog(log_path)
    fired = deploy.watch(kube(cluster), log, _prom(cluster), "production", 5, sleep=no_sleep)
    assert fired == ["PrivacyFinetunerRollbackErrorRate"]
    assert cluster.slot("privacy-finetuner-api") == "blue"
    assert [e["action"] for e in log.entries()] == ["watch", "rollback"]


def test_watch_passes_quietly(log_path: Path) -> None:
    cluster = FakeCluster.blue_green()
    ticks = iter([0.0, 0.0, 30.0, 61.0])
    log = rollback.DeploymentLog(log_path)
    fired = deploy.watch(
        kube(cluster), log, _prom(cluster), "staging", 1, sleep=no_sleep, clock=lambda: next(ticks)
    )
    assert fired == []
    assert log.entries()[-1] == {**log.entries()[-1], "action": "watch", "status": "ok"}


def test_prepare_manifests_keeps_live_slot_image() -> None:
    docs = [
        {
            "kind": "Deployment",
            "metadata": {"name": f"privacy-finetuner-api-{s}"},
            "spec": {"template": {"spec": {"containers": [{"name": "api", "image": "x"}]}}},
        }
        for s in ("blue", "green")
    ]
    docs.append(
        {
            "kind": "Deployment",
            "metadata": {"name": "privacy-finetuner-worker"},
            "spec": {"template": {"spec": {"containers": [{"name": "worker", "image": "x"}]}}},
        }
    )
    out, target = deploy.prepare_manifests(docs, "green", "img:old", "img:new", "img:w-old")
    assert target == "blue"
    images = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["image"] for d in out
    }
    assert images == {
        "privacy-finetuner-api-blue": "img:new",
        "privacy-finetuner-api-green": "img:old",
        "privacy-finetuner-worker": "img:w-old",
    }
    assert docs[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "x"  # input untouched


def test_secret_manifest_needs_both_urls() -> None:
    assert deploy.secret_manifest("ns", {"DATABASE_URL": "x"}) is None
    secret = json.loads(deploy.secret_manifest("ns", {**SECRETS, "SENTRY_DSN": ""}) or "{}")
    assert set(secret["stringData"]) == {"DATABASE_URL", "REDIS_URL"}


def test_health_rejects_non_http_url() -> None:
    with pytest.raises(rollback.DeployError, match="http"):
        deploy.http_health("file:///etc/passwd", 1)


def test_health_waits_for_readyz(capsys: pytest.CaptureFixture[str]) -> None:
    import http.server
    import threading

    answers = {"/healthz": [200], "/readyz": [503, 503, 200]}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            codes = answers[self.path]
            self.send_response(codes.pop(0) if len(codes) > 1 else codes[0])
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        deploy.http_health(url, timeout_s=30, sleep=no_sleep)
        assert capsys.readouterr().out.splitlines() == ["/healthz: 200", "/readyz: 200"]
        answers["/readyz"] = [503]
        with pytest.raises(rollback.DeployError, match="/readyz not healthy"):
            deploy.http_health(url, timeout_s=0, sleep=no_sleep)
    finally:
        server.shutdown()


def test_secret_apply_error_is_not_echoed(log_path: Path) -> None:
    cluster = FakeCluster()

    def failing(argv: list[str], stdin: str | None = None) -> rollback.CommandResult:
        if stdin and "stringData" in stdin:
            return rollback.CommandResult(1, "", "invalid value postgresql://u:s3cret@db/pf")
        return cluster(argv, stdin)

    kube_ = rollback.Kubectl("privacy-finetuner", runner=failing)
    with pytest.raises(rollback.DeployError) as info:
        deploy.stage(
            kube_, rollback.DeploymentLog(log_path), "staging", "img:v1", SECRETS, sleep=no_sleep
        )
    assert "s3cret" not in str(info.value)
    assert "s3cret" not in log_path.read_text()


def test_prometheus_non_json_answer_is_a_clear_error() -> None:
    def html(argv: list[str], stdin: str | None = None) -> rollback.CommandResult:
        return rollback.CommandResult(0, "<html>502 Bad Gateway</html>", "")

    prom = deploy.Prometheus(rollback.Kubectl("privacy-finetuner", runner=html))
    with pytest.raises(rollback.DeployError, match="did not answer JSON"):
        prom.query("up")


def test_missing_kubectl_is_a_clear_error(
    log_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = rollback.main(
        ["--environment", "staging", "--kubectl", "/nonexistent/kubectl", "--log", str(log_path)]
    )
    assert code == 1
    assert "command not found" in capsys.readouterr().err
