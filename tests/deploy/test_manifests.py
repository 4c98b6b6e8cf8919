"""Structure of deploy/: rendered overlays, compose stack, rules, rule tests, dashboard."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
REQUIRE = bool(os.environ.get("PF_REQUIRE_SERVICES"))


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if REQUIRE:
            pytest.fail(f"{tool} not installed and PF_REQUIRE_SERVICES is set")
        pytest.skip(f"{tool} not installed")
    return path


@pytest.fixture(scope="module", params=["staging", "production"])
def rendered(request: pytest.FixtureRequest) -> dict[tuple[str, str], dict[str, Any]]:
    kubectl = need("kubectl")
    out = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "k8s" / "overlays" / request.param)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out) if d}


def test_overlay_has_blue_green_slots_services_hpa_and_policies(
    rendered: dict[tuple[str, str], Any],
) -> None:
    for slot in ("blue", "green"):
        assert ("Deployment", f"privacy-finetuner-api-{slot}") in rendered
        assert ("HorizontalPodAutoscaler", f"privacy-finetuner-api-{slot}") in rendered
    assert ("Deployment", "privacy-finetuner-worker") in rendered
    assert rendered[("Service", "privacy-finetuner-api")]["spec"]["selector"]["slot"] == "blue"
    assert (
        rendered[("Service", "privacy-finetuner-api-preview")]["spec"]["selector"]["slot"]
        == "green"
    )
    canary = rendered[("Ingress", "privacy-finetuner-canary")]["metadata"]["annotations"]
    assert canary["nginx.ingress.kubernetes.io/canary"] == "true"
    assert canary["nginx.ingress.kubernetes.io/canary-weight"] == "0"
    assert ("NetworkPolicy", "privacy-finetuner-default-deny") in rendered
    for service, slot in (
        ("privacy-finetuner-api", "blue"),
        ("privacy-finetuner-api-preview", "green"),
    ):
        selector = rendered[("Service", service)]["spec"]["selector"]
        pod_labels = rendered[("Deployment", f"privacy-finetuner-api-{slot}")]["spec"]["template"][
            "metadata"
        ]["labels"]
        assert selector.items() <= pod_labels.items(), service
    assert "PRIVACY_CONFIG" in rendered[("ConfigMap", "privacy-finetuner-config")]["data"]


def test_network_policies_select_the_right_peers(rendered: dict[tuple[str, str], Any]) -> None:
    assert (
        rendered[("NetworkPolicy", "privacy-finetuner-default-deny")]["spec"]["podSelector"] == {}
    )
    egress = rendered[("NetworkPolicy", "privacy-finetuner-egress")]["spec"]["egress"]
    dns = egress[0]["to"][0]
    assert dns["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert {p["port"] for rule in egress[1:] for p in rule["ports"]} == {5432, 6379, 443}
    api = rendered[("NetworkPolicy", "privacy-finetuner-api")]["spec"]
    pod_labels = rendered[("Deployment", "privacy-finetuner-api-blue")]["spec"]["template"][
        "metadata"
    ]["labels"]
    assert api["podSelector"]["matchLabels"].items() <= pod_labels.items()
    sources = {
        f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for f in api["ingress"][0]["from"]
    }
    assert sources == {"ingress-nginx", "monitoring"}


def test_pods_are_hardened_and_probed(rendered: dict[tuple[str, str], Any]) -> None:
    for (kind, name), doc in rendered.items():
        if kind != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["resources"]["limits"]["cpu"] and c["resources"]["limits"]["memory"]
            secrets = {
                e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
                for e in c["env"]
                if "secretKeyRef" in e.get("valueFrom", {})
            }
            assert secrets["DATABASE_URL"] == secrets["REDIS_URL"] == "privacy-finetuner-secrets"
            if "api" in name:
                assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_compose_stack_has_every_service_with_healthchecks() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    long_running = {"api", "worker", "postgres", "redis", "prometheus", "grafana"}
    assert set(services) == long_running | {"volume-init"}  # one-shot chown of the runs volume
    for name in long_running:
        assert "healthcheck" in services[name], name
    for name in ("api", "worker"):
        assert (
            services[name]["depends_on"]["volume-init"]["condition"]
            == "service_completed_successfully"
        )
    assert {"pgdata", "redisdata", "prometheusdata", "grafanadata"} <= set(compose["volumes"])
    api = services["api"]
    assert api["read_only"] is True and api["user"] == "10001:10001"
    assert "/readyz" in " ".join(api["healthcheck"]["test"])


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(
        (DEPLOY / "prometheus" / "rules" / "privacy-finetuner.rules.yml").read_text()
    )
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_alerts_carry_the_spec_thresholds() -> None:
    alerts = {r["alert"]: r for r in _rules() if "alert" in r}
    expect = {
        "PrivacyFinetunerErrorRateWarning": ("> 0.01", None, "warning"),
        "PrivacyFinetunerErrorRateCritical": ("> 0.05", None, "critical"),
        "PrivacyFinetunerLatencyWarning": ("> 2", None, "warning"),
        "PrivacyFinetunerLatencyCritical": ("> 5", None, "critical"),
        "PrivacyFinetunerRollbackErrorRate": ("> 0.05", "5m", "critical"),
        "PrivacyFinetunerRollbackLatency": ("> 10", "3m", "critical"),
        "PrivacyFinetunerRollbackHealthCheck": ("== 0", "2m", "critical"),
        "PrivacyBudgetNearlyExhausted": (">= 0.8", None, "warning"),
        "PrivacyBudgetExhausted": (">= 1", None, "critical"),
    }
    for name, (threshold, duration, severity) in expect.items():
        rule = alerts[name]
        assert threshold in rule["expr"], name
        assert rule["labels"]["severity"] == severity
        if duration:
            assert rule["for"] == duration and rule["labels"]["action"] == "rollback"


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load(
        (DEPLOY / "prometheus" / "tests" / "privacy-finetuner.test.yml").read_text()
    )
    fired: set[str] = set()
    quiet: set[str] = set()
    for group in tests["tests"]:
        for case in group.get("alert_rule_test", []):
            (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    alerts = {r["alert"] for r in _rules() if "alert" in r}
    assert alerts - fired == set()
    assert alerts - quiet == set()


def test_dashboard_queries_parse_and_cover_the_issue(tmp_path: Path) -> None:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "privacy-finetuner.json").read_text())
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    titles = " ".join(p["title"].lower() for p in panels)
    for word in ("budget", "jobs", "response time", "error", "failed authentications", "noise"):
        assert word in titles, word
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    promtool = need("promtool")
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:q{i}", "expr": re.sub(r"\$\w+", ".*", e)}
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_rule_unit_tests_pass() -> None:
    promtool = need("promtool")
    out = subprocess.run(
        [promtool, "test", "rules", "privacy-finetuner.test.yml"],
        cwd=DEPLOY / "prometheus" / "tests",
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_k8s_scrape_config_keeps_api_pods_and_labels_namespace_and_slot() -> None:
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-k8s.yml").read_text())
    [job] = [j for j in cfg["scrape_configs"] if j["job_name"] == "privacy-finetuner-api"]
    relabel = job["relabel_configs"]
    targets = {r.get("target_label"): r["source_labels"] for r in relabel if "target_label" in r}
    assert targets["namespace"] == ["__meta_kubernetes_namespace"]
    assert targets["slot"] == ["__meta_kubernetes_pod_label_slot"]
    # the keep rules match the labels, annotation and port name of the api pods
    api = next(yaml.safe_load_all((DEPLOY / "k8s" / "api-slot" / "api.yaml").read_text()))
    template = api["spec"]["template"]
    meta = {
        "__meta_kubernetes_pod_label_app_kubernetes_io_name": template["metadata"]["labels"][
            "app.kubernetes.io/name"
        ],
        "__meta_kubernetes_pod_label_app_kubernetes_io_component": template["metadata"]["labels"][
            "app.kubernetes.io/component"
        ],
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape": template["metadata"][
            "annotations"
        ]["prometheus.io/scrape"],
        "__meta_kubernetes_pod_container_port_name": template["spec"]["containers"][0]["ports"][0][
            "name"
        ],
    }
    for rule in relabel:
        if rule.get("action") == "keep":
            value = ";".join(meta[label] for label in rule["source_labels"])
            assert re.fullmatch(rule["regex"], value), rule
    namespaces = set(job["kubernetes_sd_configs"][0]["namespaces"]["names"])
    overlays = {
        yaml.safe_load((DEPLOY / "k8s" / "overlays" / env / "kustomization.yaml").read_text())[
            "namespace"
        ]
        for env in ("staging", "production")
    }
    assert namespaces == overlays


def test_alertmanager_routes_every_alert_by_severity_and_action() -> None:
    amtool = need("amtool")
    config = DEPLOY / "alertmanager" / "alertmanager.yml"
    expected = {"critical": "pager", "warning": "chat", "info": "chat-info"}
    for rule in _rules():
        if "alert" not in rule:
            continue
        labels = {"alertname": rule["alert"], **rule["labels"]}
        want = "oncall" if labels.get("action") == "rollback" else expected[labels["severity"]]
        out = subprocess.run(
            [
                amtool,
                "config",
                "routes",
                "test",
                f"--config.file={config}",
                f"--verify.receivers={want}",
            ]
            + [f"{k}={v}" for k, v in labels.items()],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, (rule["alert"], out.stdout, out.stderr)
