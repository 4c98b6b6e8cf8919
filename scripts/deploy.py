#!/usr/bin/env python3
"""Deploy privacy-finetuner to Kubernetes: blue-green with an optional canary (deploy/k8s).

Steps, each a subcommand that .github/workflows/deploy.yml calls in order:

``stage``    render ``deploy/k8s/overlays/ENV`` (kubectl kustomize), keep the live slot and the
             worker on the image they run, put the new image on the other (preview) slot, apply,
             wait for the rollout, then check ``/healthz`` and ``/readyz`` of the preview
             Service through the Kubernetes API proxy. Nothing live changes.
``promote``  ``--strategy blue-green``: switch the live Service to the preview slot, then move
             the worker to the new image (its previous image kept in an annotation).
             ``--strategy canary``: set the canary Ingress weight 5 -> 10 -> 25 -> 50 -> 100,
             checking the new slot's error rate and p95 latency in Prometheus after each step
             (abort: weight back to 0, exit 1), then switch the live Service and reset the weight.
``health``   GET ``URL/healthz`` and ``URL/readyz`` until both answer 200 (or time out).
``watch``    for N minutes after a switch, poll Prometheus for the rollback alerts
             (``ALERTS{action="rollback"}``, deploy/prometheus/rules); one firing rolls back.

Every step appends to the deployment log (scripts/rollback.py: JSON Lines, append-only).
Secrets: ``stage`` builds the ``privacy-finetuner-secrets`` Secret from DATABASE_URL,
REDIS_URL and SENTRY_DSN in its environment and sends it to kubectl on stdin; nothing prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rollback import (
    API_CONTAINER,
    CANARY_INGRESS,
    CANARY_WEIGHT_ANNOTATION,
    LIVE_SERVICE,
    PREVIEW_SERVICE,
    PREVIOUS_IMAGE_ANNOTATION,
    SLOTS,
    WORKER_CONTAINER,
    WORKER_DEPLOYMENT,
    DeployError,
    DeploymentLog,
    Kubectl,
    Runner,
    add_common_arguments,
    deployment_name,
    kubectl_from_args,
    other_slot,
    rollback,
    subprocess_runner,
)

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
OVERLAYS: Final = REPO_ROOT / "deploy" / "k8s" / "overlays"
CANARY_STEPS: Final = (5, 10, 25, 50, 100)
SECRET_NAME: Final = "privacy-finetuner-secrets"  # noqa: S105 - a name, not a value
SECRET_KEYS: Final = ("DATABASE_URL", "REDIS_URL", "SENTRY_DSN")
REQUIRED_SECRET_KEYS: Final = ("DATABASE_URL", "REDIS_URL")

Sleep = Callable[[float], None]


# --------------------------------------------------------------------------- manifests


def render_overlay(kube: Kubectl, environment: str) -> list[dict[str, Any]]:
    """The overlay rendered by ``kubectl kustomize`` (no cluster access)."""
    text = kube.kustomize(OVERLAYS / environment)
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc]
    except yaml.YAMLError as exc:
        raise DeployError(f"kubectl kustomize {environment}: unreadable output ({exc})") from None


def prepare_manifests(
    docs: Sequence[dict[str, Any]],
    live_slot: str | None,
    live_image: str | None,
    new_image: str,
    worker_image: str | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """Set images and selectors so that applying changes only the preview slot.

    The live slot keeps ``live_image`` and the worker ``worker_image`` (when they exist).
    First deploy (no live slot): the new image goes to blue, which becomes live at once.
    Returns the documents and the slot that now carries ``new_image``.
    """
    target = SLOTS[0] if live_slot is None else other_slot(live_slot)
    live = live_slot or target
    out: list[dict[str, Any]] = []
    for original in docs:
        doc = json.loads(json.dumps(original))
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name", "")
        if kind == "Deployment":
            image = new_image
            if live_slot is not None and name == deployment_name(live_slot):
                image = live_image or new_image
            elif name == WORKER_DEPLOYMENT:
                image = worker_image or new_image
            for container in doc["spec"]["template"]["spec"]["containers"]:
                if container["name"] in (API_CONTAINER, WORKER_CONTAINER):
                    container["image"] = image
        elif kind == "Service" and name == LIVE_SERVICE:
            doc["spec"]["selector"]["slot"] = live
        elif kind == "Service" and name == PREVIEW_SERVICE:
            doc["spec"]["selector"]["slot"] = other_slot(live)
        elif kind == "Ingress" and name == CANARY_INGRESS:
            doc["metadata"]["annotations"][CANARY_WEIGHT_ANNOTATION] = "0"
        out.append(doc)
    return out, target


def secret_manifest(namespace: str, env: dict[str, str]) -> str | None:
    """The Secret as JSON for ``kubectl apply -f -``; None when DATABASE_URL/REDIS_URL unset."""
    if not all(env.get(key) for key in REQUIRED_SECRET_KEYS):
        return None
    data = {key: env[key] for key in SECRET_KEYS if env.get(key)}
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": SECRET_NAME, "namespace": namespace},
            "stringData": data,
        }
    )


# --------------------------------------------------------------------------- probes


def proxy_get(kube: Kubectl, service: str, path: str) -> str:
    """GET a path of a Service's http port through the API server (no port-forward)."""
    raw = f"/api/v1/namespaces/{kube.namespace}/services/{service}:http/proxy{path}"
    return kube.run("get", "--raw", raw)


def check_preview(kube: Kubectl, attempts: int = 12, sleep: Sleep = time.sleep) -> None:
    last = ""
    for attempt in range(attempts):
        try:
            for path in ("/healthz", "/readyz"):
                proxy_get(kube, PREVIEW_SERVICE, path)
            return
        except DeployError as exc:
            last = str(exc)
            if attempt + 1 < attempts:
                sleep(5)
    raise DeployError(f"preview slot not healthy: {last}")


def http_health(url: str, timeout_s: float, sleep: Sleep = time.sleep) -> None:
    """Both ``/healthz`` and ``/readyz`` of ``url`` answer 200 within ``timeout_s``."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DeployError(f"health check URL must be http(s): {url}")
    deadline = time.monotonic() + timeout_s
    pending = ["/healthz", "/readyz"]
    last = ""
    while pending:
        path = pending[0]
        last = ""
        try:
            with urllib.request.urlopen(url.rstrip("/") + path, timeout=10) as resp:  # noqa: S310
                status = resp.status
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            status, last = 0, str(exc)
        if status == 200:
            print(f"{path}: 200")
            pending.pop(0)
            continue
        last = last or f"HTTP {status}"
        if time.monotonic() >= deadline:
            raise DeployError(f"{url}{path} not healthy after {timeout_s:.0f}s: {last}")
        sleep(5)


# --------------------------------------------------------------------------- Prometheus


@dataclass(frozen=True)
class Prometheus:
    """Instant queries through the API server's service proxy (kubectl's credentials)."""

    kube: Kubectl
    namespace: str = "monitoring"
    service: str = "prometheus-operated"
    port: str = "9090"

    def query(self, promql: str) -> list[dict[str, Any]]:
        qs = urllib.parse.urlencode({"query": promql})
        raw = (
            f"/api/v1/namespaces/{self.namespace}/services/{self.service}:{self.port}"
            f"/proxy/api/v1/query?{qs}"
        )
        try:
            body = json.loads(self.kube.run("get", "--raw", raw))
        except ValueError:
            raise DeployError(
                f"Prometheus at {self.namespace}/{self.service}:{self.port} did not answer JSON"
            ) from None
        if not isinstance(body, dict) or body.get("status") != "success":
            raise DeployError(f"Prometheus query failed: {body.get('error', body)}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def scalar(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None


@dataclass(frozen=True)
class CanaryThresholds:
    """The spec's warning thresholds: a canary step must stay below them."""

    max_error_ratio: float = 0.01
    max_p95_seconds: float = 2.0
    require_data: bool = False


def canary_queries(namespace: str, slot: str, window: str = "2m") -> tuple[str, str]:
    sel = (
        f'job="privacy-finetuner-api",namespace="{namespace}",slot="{slot}",'
        'route!~"/(metrics|healthz|readyz)"'
    )
    errors = (
        f'(sum(rate(http_requests_total{{{sel},status=~"5.."}}[{window}])) or vector(0))'
        f" / sum(rate(http_requests_total{{{sel}}}[{window}]))"
    )
    p95 = (
        "histogram_quantile(0.95, sum by (le) "
        f"(rate(http_request_duration_seconds_bucket{{{sel}}}[{window}])))"
    )
    return errors, p95


def canary_verdict(
    prom: Prometheus, namespace: str, slot: str, limits: CanaryThresholds
) -> tuple[bool, str]:
    errors_q, p95_q = canary_queries(namespace, slot)
    ratio, p95 = prom.scalar(errors_q), prom.scalar(p95_q)
    note = f"error ratio {ratio if ratio is not None else 'n/a'}, p95 {p95 if p95 is not None else 'n/a'} s"
    if ratio is None or p95 is None:
        return (not limits.require_data, note + " (no traffic data)")
    if ratio > limits.max_error_ratio:
        return False, note + f" > {limits.max_error_ratio:.2%} errors"
    if p95 > limits.max_p95_seconds:
        return False, note + f" > {limits.max_p95_seconds} s p95"
    return True, note


# --------------------------------------------------------------------------- steps


def stage(
    kube: Kubectl,
    log: DeploymentLog,
    environment: str,
    image: str,
    env: dict[str, str],
    rollout_timeout_s: int = 600,
    sleep: Sleep = time.sleep,
) -> str:
    """Apply the overlay with ``image`` on the preview slot; return that slot."""
    live = kube.service_slot(LIVE_SERVICE)
    live_image = kube.container_image(deployment_name(live), API_CONTAINER) if live else None
    previous_worker = kube.container_image(WORKER_DEPLOYMENT, WORKER_CONTAINER)
    entry: dict[str, Any] = {
        "environment": environment,
        "action": "stage",
        "image": image,
        "live_slot": live,
        "live_image": live_image,
    }
    try:
        secret = secret_manifest(kube.namespace, env)
        docs, target = prepare_manifests(
            render_overlay(kube, environment), live, live_image, image, previous_worker
        )
        entry["slot"] = target
        namespaces = [d for d in docs if d.get("kind") == "Namespace"]
        if namespaces:  # the Secret needs its namespace on a first deploy
            kube.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": namespaces}))
        if secret is not None:
            try:
                kube.apply(secret)
            except DeployError:
                # kubectl's message could quote the Secret's values: do not pass it on
                raise DeployError(
                    "applying the Secret failed (kubectl's message withheld)"
                ) from None
            entry["secret_synced"] = True
        elif kube.get("secret", SECRET_NAME) is None:
            raise DeployError("DATABASE_URL and REDIS_URL must be set: the Secret does not exist")
        kube.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
        kube.rollout_status(deployment_name(target), rollout_timeout_s)
        check_preview(kube, sleep=sleep)
    except DeployError as exc:
        log.append({**entry, "status": "failed", "error": str(exc)})
        raise
    log.append({**entry, "status": "ok"})
    return target


def _preview_slot(kube: Kubectl, image: str) -> str:
    slot = kube.service_slot(PREVIEW_SERVICE)
    if slot is None:
        raise DeployError(f"service/{PREVIEW_SERVICE} has no slot selector: run stage first")
    running = kube.container_image(deployment_name(slot), API_CONTAINER)
    if running != image:
        raise DeployError(f"preview slot {slot} runs {running}, not {image}: run stage first")
    return slot


def update_worker(kube: Kubectl, image: str, rollout_timeout_s: int = 600) -> str | None:
    """Move the worker to ``image``; its old image goes to an annotation for rollback.py."""
    previous = kube.container_image(WORKER_DEPLOYMENT, WORKER_CONTAINER)
    if previous is None or previous == image:
        return None
    kube.annotate("deployment", WORKER_DEPLOYMENT, PREVIOUS_IMAGE_ANNOTATION, previous)
    kube.set_image(WORKER_DEPLOYMENT, WORKER_CONTAINER, image)
    kube.rollout_status(WORKER_DEPLOYMENT, rollout_timeout_s)
    return previous


def switch(kube: Kubectl, log: DeploymentLog, environment: str, image: str) -> str:
    """Blue-green: the live Service to the preview slot (staged with ``image``), then the
    worker to ``image``."""
    live = kube.service_slot(LIVE_SERVICE)
    target = _preview_slot(kube, image)
    if live != target:
        kube.set_service_slot(LIVE_SERVICE, target)
        kube.set_service_slot(PREVIEW_SERVICE, live or other_slot(target))
    kube.set_canary_weight(0)
    previous_worker = update_worker(kube, image)
    log.append(
        {
            "environment": environment,
            "action": "switch",
            "status": "ok" if live != target else "noop",
            "from_slot": live,
            "slot": target,
            "image": image,
            "previous_worker_image": previous_worker,
        }
    )
    return target


def canary(
    kube: Kubectl,
    log: DeploymentLog,
    prom: Prometheus,
    environment: str,
    image: str,
    step_seconds: float,
    limits: CanaryThresholds,
    steps: Sequence[int] = CANARY_STEPS,
    sleep: Sleep = time.sleep,
) -> str:
    """Canary 5 -> 10 -> 25 -> 50 -> 100 on the preview slot, then switch."""
    target = _preview_slot(kube, image)
    for weight in steps:
        kube.set_canary_weight(weight)
        sleep(step_seconds)
        ready = kube.ready_replicas(deployment_name(target)) > 0
        ok, note = canary_verdict(prom, kube.namespace, target, limits)
        if not ready:
            ok, note = False, note + "; canary slot has no ready pods"
        entry = {
            "environment": environment,
            "action": "canary-step",
            "slot": target,
            "image": image,
            "weight": weight,
            "metrics": note,
        }
        if not ok:
            kube.set_canary_weight(0)
            log.append({**entry, "status": "aborted"})
            raise DeployError(f"canary aborted at {weight}%: {note}")
        log.append({**entry, "status": "ok"})
        print(f"canary {weight}%: {note}", flush=True)
    return switch(kube, log, environment, image)


def rollback_alerts(prom: Prometheus, namespace: str) -> list[str]:
    query = f'ALERTS{{alertstate="firing",action="rollback",namespace="{namespace}"}}'
    return sorted({str(r["metric"].get("alertname", "?")) for r in prom.query(query)})


def watch(
    kube: Kubectl,
    log: DeploymentLog,
    prom: Prometheus,
    environment: str,
    minutes: float,
    interval_s: float = 30.0,
    sleep: Sleep = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[str]:
    """Roll back when a rollback alert fires within ``minutes``; returns the alerts seen."""
    deadline = clock() + minutes * 60
    while True:
        firing = rollback_alerts(prom, kube.namespace)
        if firing:
            reason = "rollback alert firing: " + ", ".join(firing)
            log.append(
                {
                    "environment": environment,
                    "action": "watch",
                    "status": "failed",
                    "alerts": firing,
                }
            )
            rollback(kube, log, environment, reason)
            return firing
        if clock() >= deadline:
            log.append(
                {"environment": environment, "action": "watch", "status": "ok", "minutes": minutes}
            )
            return []
        sleep(interval_s)


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_stage = sub.add_parser("stage", help="apply the overlay, new image on the preview slot")
    p_promote = sub.add_parser("promote", help="blue-green switch or canary, then switch")
    p_watch = sub.add_parser("watch", help="roll back if a rollback alert fires")
    p_health = sub.add_parser("health", help="GET /healthz and /readyz until 200")
    for p in (p_stage, p_promote, p_watch):
        add_common_arguments(p)
    for p in (p_stage, p_promote):
        p.add_argument("--image", required=True, help="ghcr.io/terragon-labs/privacy-finetuner:TAG")
    p_stage.add_argument("--timeout", type=int, default=600, help="rollout timeout, seconds")
    p_promote.add_argument("--strategy", choices=("blue-green", "canary"), default="blue-green")
    p_promote.add_argument("--step-seconds", type=float, default=120.0, help="canary step time")
    p_promote.add_argument("--max-error-ratio", type=float, default=0.01)
    p_promote.add_argument("--max-p95-seconds", type=float, default=2.0)
    p_promote.add_argument("--require-metrics", action="store_true", help="no data fails a step")
    p_watch.add_argument("--minutes", type=float, default=10.0)
    p_watch.add_argument("--interval", type=float, default=30.0)
    for p in (p_promote, p_watch):
        p.add_argument("--prometheus-namespace", default="monitoring")
        p.add_argument("--prometheus-service", default="prometheus-operated")
        p.add_argument("--prometheus-port", default="9090")
    p_health.add_argument("url")
    p_health.add_argument("--timeout", type=float, default=120.0)
    return parser


def main(argv: Sequence[str] | None = None, runner: Runner = subprocess_runner) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "health":
            http_health(args.url, args.timeout)
            return 0
        kube = kubectl_from_args(args, runner)
        log = DeploymentLog(args.log)
        if args.command == "stage":
            slot = stage(kube, log, args.environment, args.image, dict(os.environ), args.timeout)
            print(f"staged {args.image} on slot {slot} in {kube.namespace}")
            return 0
        prom = Prometheus(
            kube, args.prometheus_namespace, args.prometheus_service, args.prometheus_port
        )
        if args.command == "promote":
            if args.strategy == "canary":
                limits = CanaryThresholds(
                    args.max_error_ratio, args.max_p95_seconds, args.require_metrics
                )
                slot = canary(
                    kube, log, prom, args.environment, args.image, args.step_seconds, limits
                )
            else:
                slot = switch(kube, log, args.environment, args.image)
            print(f"live slot in {kube.namespace} is now {slot} ({args.image})")
            return 0
        firing = watch(kube, log, prom, args.environment, args.minutes, args.interval)
        if firing:
            print(f"rolled back: {', '.join(firing)}", file=sys.stderr)
            return 1
        print(f"no rollback alert in {args.minutes:g} minutes")
        return 0
    except DeployError as exc:
        print(f"deploy {args.command} failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
