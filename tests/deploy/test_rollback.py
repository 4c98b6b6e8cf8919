"""scripts/rollback.py against a fake kubectl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rollback
from fake_kubectl import FakeCluster


def kube(cluster: FakeCluster) -> rollback.Kubectl:
    return rollback.Kubectl("privacy-finetuner", runner=cluster)


def test_rollback_switches_live_service_back_and_logs(log_path: Path) -> None:
    cluster = FakeCluster.blue_green(live="green", old="v2", new="v1")
    cluster.obj("deployment", "privacy-finetuner-worker")["metadata"]["annotations"][
        rollback.PREVIOUS_IMAGE_ANNOTATION
    ] = "img:v1"
    log = rollback.DeploymentLog(log_path)

    result = rollback.rollback(kube(cluster), log, "production", "error rate alert")

    assert (result.from_slot, result.to_slot) == ("green", "blue")
    assert cluster.slot("privacy-finetuner-api") == "blue"
    assert cluster.slot("privacy-finetuner-api-preview") == "green"
    assert cluster.canary_weights == [0]
    assert cluster.image("privacy-finetuner-worker") == "img:v1"
    [entry] = log.entries()
    assert entry["action"] == "rollback" and entry["status"] == "ok"
    assert entry["from_image"] == "img:v2" and entry["to_image"] == "img:v1"
    assert entry["reason"] == "error rate alert"


def test_rollback_refuses_a_slot_without_ready_pods(log_path: Path) -> None:
    cluster = FakeCluster.blue_green(live="blue", old="v2", new="v1")
    cluster.obj("deployment", "privacy-finetuner-api-green")["status"]["readyReplicas"] = 0
    log = rollback.DeploymentLog(log_path)

    with pytest.raises(rollback.DeployError, match="no ready pods"):
        rollback.rollback(kube(cluster), log, "staging", "test")

    assert cluster.slot("privacy-finetuner-api") == "blue"
    assert log.entries()[-1]["status"] == "failed"


def test_force_scales_up_the_target_slot(log_path: Path) -> None:
    cluster = FakeCluster.blue_green(live="blue", old="v2", new="v1")
    cluster.obj("deployment", "privacy-finetuner-api-green")["status"]["readyReplicas"] = 0
    rollback.rollback(kube(cluster), rollback.DeploymentLog(log_path), "staging", "t", force=True)
    assert any(c[3] == "scale" for c in cluster.calls)
    assert cluster.slot("privacy-finetuner-api") == "green"


def test_canary_abort_leaves_live_service(log_path: Path) -> None:
    cluster = FakeCluster.blue_green(live="blue")
    code = rollback.main(
        ["--environment", "production", "--canary-abort", "--log", str(log_path)], runner=cluster
    )
    assert code == 0
    assert cluster.canary_weights == [0]
    assert cluster.slot("privacy-finetuner-api") == "blue"
    assert [e["action"] for e in rollback.DeploymentLog(log_path).entries()] == ["canary-abort"]


def test_cli_uses_environment_namespace_and_reports_errors(
    log_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = FakeCluster()  # nothing deployed
    code = rollback.main(["--environment", "staging", "--log", str(log_path)], runner=cluster)
    assert code == 1
    assert "nothing to roll back" in capsys.readouterr().err
    assert cluster.calls[0][:3] == ["kubectl", "-n", "privacy-finetuner-staging"]


def test_log_is_append_only_json_lines(log_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_SHA", "abc123")
    log = rollback.DeploymentLog(log_path)
    log.append({"action": "stage"})
    first = log_path.read_text()
    log.append({"action": "switch"})
    text = log_path.read_text()
    assert text.startswith(first)
    rows = [json.loads(line) for line in text.splitlines()]
    assert [r["action"] for r in rows] == ["stage", "switch"]
    assert all(r["git_sha"] == "abc123" and r["ts"] for r in rows)


def test_other_slot_rejects_unknown() -> None:
    assert rollback.other_slot("blue") == "green"
    with pytest.raises(rollback.DeployError):
        rollback.other_slot("red")


def test_bad_image_not_live_keeps_live_slot(log_path: Path) -> None:
    # a canary of v2 aborted, or the run failed before its switch: blue (v1) stays live
    cluster = FakeCluster.blue_green(live="blue", old="v1", new="v2")
    result = rollback.rollback(
        kube(cluster),
        rollback.DeploymentLog(log_path),
        "production",
        "run failed",
        bad_image="img:v2",
    )
    assert result.to_slot == result.from_slot == "blue"
    assert cluster.slot("privacy-finetuner-api") == "blue"
    assert cluster.canary_weights == [0]
    assert cluster.image("privacy-finetuner-worker") == "img:v1"


def test_bad_image_live_is_switched_away(log_path: Path) -> None:
    cluster = FakeCluster.blue_green(live="green", old="v2", new="v1")
    worker = cluster.obj("deployment", "privacy-finetuner-worker")
    worker["metadata"]["annotations"][rollback.PREVIOUS_IMAGE_ANNOTATION] = "img:v1"
    code = rollback.main(
        ["--environment", "production", "--bad-image", "img:v2", "--log", str(log_path)],
        runner=cluster,
    )
    assert code == 0
    assert cluster.slot("privacy-finetuner-api") == "blue"
    assert cluster.image("privacy-finetuner-worker") == "img:v1"


def test_rollback_refuses_when_both_slots_run_the_same_image(log_path: Path) -> None:
    cluster = FakeCluster.blue_green(live="blue", old="v1", new="v1")  # first deploy
    with pytest.raises(rollback.DeployError, match="no older version"):
        rollback.rollback(kube(cluster), rollback.DeploymentLog(log_path), "staging", "t")
    assert cluster.slot("privacy-finetuner-api") == "blue"
