#!/usr/bin/env python3
"""Roll privacy-finetuner back, and the pieces scripts/deploy.py shares with it.

Blue-green layout (deploy/k8s): two api Deployments, ``privacy-finetuner-api-blue`` and
``-green``; the live Service ``privacy-finetuner-api`` selects one slot, the preview Service
the other; the canary Ingress sends ``canary-weight`` percent of traffic to the preview Service.
The slot that is not live keeps the previous version running, so a rollback is:

1. canary weight back to 0 (aborts a canary in progress);
2. the live Service's selector back to the other slot (after checking it has ready pods),
   the preview Service's selector to the slot that failed;
3. the worker back to the image recorded in its ``previous-image`` annotation;
4. one line in the append-only deployment log (JSON Lines).

``--canary-abort`` does step 1 (and 4) only. Every kubectl call goes through a ``Runner``,
so tests drive this module with a fake kubectl. Nothing here prints a secret: commands are
logged by their arguments only, and no argument carries one (secrets go through stdin).

Usage:
    scripts/rollback.py --environment production --reason "error rate alert"
    scripts/rollback.py --environment staging --canary-abort
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

SLOTS: Final = ("blue", "green")
API_CONTAINER: Final = "api"
WORKER_CONTAINER: Final = "worker"
LIVE_SERVICE: Final = "privacy-finetuner-api"
PREVIEW_SERVICE: Final = "privacy-finetuner-api-preview"
CANARY_INGRESS: Final = "privacy-finetuner-canary"
CANARY_WEIGHT_ANNOTATION: Final = "nginx.ingress.kubernetes.io/canary-weight"
WORKER_DEPLOYMENT: Final = "privacy-finetuner-worker"
PREVIOUS_IMAGE_ANNOTATION: Final = "privacy-finetuner.terragon-labs.com/previous-image"
NAMESPACES: Final[Mapping[str, str]] = {
    "staging": "privacy-finetuner-staging",
    "production": "privacy-finetuner",
}
DEFAULT_LOG: Final = Path("runs/deploy-log/deployments.jsonl")


class DeployError(RuntimeError):
    """A deploy or rollback step failed; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str], str | None], CommandResult]


def subprocess_runner(args: Sequence[str], stdin: str | None = None) -> CommandResult:
    """Run a command without a shell; stdin (manifests, secrets) never reaches argv."""
    try:
        proc = subprocess.run(  # fixed argv, no shell
            list(args), input=stdin, capture_output=True, text=True, check=False, timeout=900
        )
    except FileNotFoundError:
        return CommandResult(127, "", f"{args[0]}: command not found")
    except subprocess.TimeoutExpired:
        return CommandResult(124, "", f"{args[0]}: no answer within 900 s")
    return CommandResult(proc.returncode, proc.stdout, proc.stderr)


def deployment_name(slot: str) -> str:
    return f"privacy-finetuner-api-{slot}"


def other_slot(slot: str) -> str:
    if slot not in SLOTS:
        raise DeployError(f"unknown slot {slot!r}; expected one of {', '.join(SLOTS)}")
    return SLOTS[1] if slot == SLOTS[0] else SLOTS[0]


class Kubectl:
    """The kubectl calls the deploy and rollback steps need, in one namespace."""

    def __init__(
        self,
        namespace: str,
        runner: Runner = subprocess_runner,
        kubectl: str = "kubectl",
        context: str | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.namespace = namespace
        self._runner = runner
        self._kubectl = [kubectl, *(["--context", context] if context else [])]
        self._base = [*self._kubectl, "-n", namespace]
        self._echo = echo

    def kustomize(self, directory: Path) -> str:
        """Render a kustomization locally (no cluster access)."""
        result = self._runner([*self._kubectl, "kustomize", str(directory)], None)
        if result.returncode != 0:
            raise DeployError(
                f"kubectl kustomize {directory} failed: {result.stderr.strip()[-2000:]}"
            )
        return result.stdout

    def run(self, *args: str, stdin: str | None = None) -> str:
        argv = [*self._base, *args]
        if self._echo is not None:
            self._echo("+ " + " ".join(argv))
        result = self._runner(argv, stdin)
        if result.returncode != 0:
            detail = result.stderr.strip()[-2000:] or result.stdout.strip()[-2000:]
            raise DeployError(
                f"kubectl {' '.join(args[:3])} failed ({result.returncode}): {detail}"
            )
        return result.stdout

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The object as JSON, or None when it does not exist."""
        argv = [*self._base, "get", kind, name, "-o", "json", "--ignore-not-found"]
        result = self._runner(argv, None)
        if result.returncode != 0:
            raise DeployError(f"kubectl get {kind} {name} failed: {result.stderr.strip()[-2000:]}")
        if not result.stdout.strip():
            return None
        try:
            obj: dict[str, Any] = json.loads(result.stdout)
        except ValueError as exc:
            raise DeployError(f"kubectl get {kind} {name}: not JSON ({exc})") from None
        return obj

    def require(self, kind: str, name: str) -> dict[str, Any]:
        obj = self.get(kind, name)
        if obj is None:
            raise DeployError(f"{kind}/{name} not found in namespace {self.namespace}")
        return obj

    def service_slot(self, service: str) -> str | None:
        obj = self.get("service", service)
        if obj is None:
            return None
        slot = obj.get("spec", {}).get("selector", {}).get("slot")
        return slot if isinstance(slot, str) else None

    def set_service_slot(self, service: str, slot: str) -> None:
        patch = json.dumps({"spec": {"selector": {"slot": slot}}})
        self.run("patch", "service", service, "--type", "merge", "-p", patch)

    def container_image(self, deployment: str, container: str) -> str | None:
        obj = self.get("deployment", deployment)
        if obj is None:
            return None
        for spec in obj["spec"]["template"]["spec"].get("containers", []):
            if spec.get("name") == container:
                image = spec.get("image")
                return image if isinstance(image, str) else None
        return None

    def ready_replicas(self, deployment: str) -> int:
        obj = self.get("deployment", deployment)
        if obj is None:
            return 0
        return int(obj.get("status", {}).get("readyReplicas", 0) or 0)

    def annotation(self, kind: str, name: str, key: str) -> str | None:
        obj = self.get(kind, name)
        if obj is None:
            return None
        value = obj.get("metadata", {}).get("annotations", {}).get(key)
        return value if isinstance(value, str) else None

    def annotate(self, kind: str, name: str, key: str, value: str) -> None:
        self.run("annotate", kind, name, f"{key}={value}", "--overwrite")

    def set_canary_weight(self, weight: int) -> None:
        if not 0 <= weight <= 100:
            raise DeployError(f"canary weight must be 0..100, got {weight}")
        self.annotate("ingress", CANARY_INGRESS, CANARY_WEIGHT_ANNOTATION, str(weight))

    def set_image(self, deployment: str, container: str, image: str) -> None:
        self.run("set", "image", f"deployment/{deployment}", f"{container}={image}")

    def rollout_status(self, deployment: str, timeout_s: int) -> None:
        self.run("rollout", "status", f"deployment/{deployment}", f"--timeout={timeout_s}s")

    def apply(self, manifest: str) -> str:
        return self.run("apply", "-f", "-", stdin=manifest)


class DeploymentLog:
    """Append-only JSON Lines: one object per deploy step, never rewritten."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "ts": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "actor": os.environ.get("GITHUB_ACTOR") or getpass.getuser(),
            "git_sha": os.environ.get("GITHUB_SHA", ""),
            "run_url": _run_url(),
            **entry,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, sort_keys=True, separators=(",", ":"))
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return record

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out: list[dict[str, Any]] = []
        for raw in self.path.read_text(encoding="utf-8").splitlines():
            if raw.strip():
                out.append(json.loads(raw))
        return out


def _run_url() -> str:
    server, repo, run = (
        os.environ.get(k, "") for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    return f"{server}/{repo}/actions/runs/{run}" if server and repo and run else ""


@dataclasses.dataclass(frozen=True)
class RollbackResult:
    from_slot: str
    to_slot: str
    from_image: str | None
    to_image: str | None
    worker_image: str | None


def abort_canary(kube: Kubectl, log: DeploymentLog, environment: str, reason: str) -> None:
    """Send every request back to the live slot; the live Service is left as it is."""
    kube.set_canary_weight(0)
    log.append(
        {
            "environment": environment,
            "action": "canary-abort",
            "status": "ok",
            "live_slot": kube.service_slot(LIVE_SERVICE),
            "reason": reason,
        }
    )


def rollback(
    kube: Kubectl,
    log: DeploymentLog,
    environment: str,
    reason: str,
    to_slot: str | None = None,
    force: bool = False,
    rollback_worker: bool = True,
    ready_timeout_s: int = 300,
    bad_image: str | None = None,
) -> RollbackResult:
    """Switch the live Service back to the other slot (see the module docstring).

    With ``bad_image`` (what a failed workflow run deployed) the live Service is switched
    only if it serves that image: a run that failed before its switch, or a canary that
    aborted, leaves the live slot alone and only resets the canary weight (and the worker).
    """
    live = kube.service_slot(LIVE_SERVICE)
    if live is None:
        raise DeployError(f"service/{LIVE_SERVICE} has no slot selector: nothing to roll back")
    live_image = kube.container_image(deployment_name(live), API_CONTAINER)
    if bad_image is not None and to_slot is None and live_image != bad_image:
        to_slot = live
    target = to_slot or other_slot(live)
    if target == live and bad_image is None:
        raise DeployError(f"slot {target} is already live")
    from_image = live_image
    to_image = kube.container_image(deployment_name(target), API_CONTAINER)
    entry: dict[str, Any] = {
        "environment": environment,
        "action": "rollback",
        "from_slot": live,
        "to_slot": target,
        "from_image": from_image,
        "to_image": to_image,
        "reason": reason,
    }
    try:
        if to_image is None:
            raise DeployError(f"deployment/{deployment_name(target)} does not exist")
        if target != live and to_image == from_image:
            raise DeployError(f"slot {target} runs the same image ({to_image}): no older version")
        if kube.ready_replicas(deployment_name(target)) < 1:
            if not force:
                raise DeployError(f"slot {target} has no ready pods; use --force to scale it up")
            kube.run("scale", f"deployment/{deployment_name(target)}", "--replicas=1")
            kube.rollout_status(deployment_name(target), ready_timeout_s)
        kube.set_canary_weight(0)
        if target != live:
            kube.set_service_slot(LIVE_SERVICE, target)
            kube.set_service_slot(PREVIEW_SERVICE, live)
        worker_image = None
        worker_now = kube.container_image(WORKER_DEPLOYMENT, WORKER_CONTAINER)
        if rollback_worker and (bad_image is None or worker_now == bad_image):
            previous = kube.annotation("deployment", WORKER_DEPLOYMENT, PREVIOUS_IMAGE_ANNOTATION)
            if previous and previous != worker_now:
                kube.set_image(WORKER_DEPLOYMENT, WORKER_CONTAINER, previous)
                kube.rollout_status(WORKER_DEPLOYMENT, ready_timeout_s)
                worker_image = previous
    except DeployError as exc:
        log.append({**entry, "status": "failed", "error": str(exc)})
        raise
    log.append({**entry, "status": "ok", "worker_image": worker_image})
    return RollbackResult(live, target, from_image, to_image, worker_image)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--environment", required=True, choices=sorted(NAMESPACES))
    parser.add_argument("--namespace", help="override the environment's namespace")
    parser.add_argument("--context", help="kubectl context (default: current)")
    parser.add_argument("--kubectl", default="kubectl", help="kubectl binary")
    parser.add_argument(
        "--log",
        type=Path,
        default=Path(os.environ.get("PF_DEPLOY_LOG", str(DEFAULT_LOG))),
        help="append-only deployment log (JSON Lines); env PF_DEPLOY_LOG",
    )


def kubectl_from_args(args: argparse.Namespace, runner: Runner) -> Kubectl:
    return Kubectl(
        args.namespace or NAMESPACES[args.environment],
        runner=runner,
        kubectl=args.kubectl,
        context=args.context,
        echo=lambda line: print(line, flush=True),
    )


def main(argv: Sequence[str] | None = None, runner: Runner = subprocess_runner) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_common_arguments(parser)
    parser.add_argument("--reason", default="manual rollback", help="recorded in the log")
    parser.add_argument("--to-slot", choices=SLOTS, help="default: the slot that is not live")
    parser.add_argument("--canary-abort", action="store_true", help="only set canary weight 0")
    parser.add_argument("--force", action="store_true", help="scale up a target slot with no pods")
    parser.add_argument("--skip-worker", action="store_true", help="leave the worker image")
    parser.add_argument(
        "--bad-image",
        help="the image a failed run deployed: switch only if the live slot serves it",
    )
    args = parser.parse_args(argv)
    kube = kubectl_from_args(args, runner)
    log = DeploymentLog(args.log)
    try:
        if args.canary_abort:
            abort_canary(kube, log, args.environment, args.reason)
            print(f"canary aborted in {kube.namespace}: all traffic on the live slot")
            return 0
        result = rollback(
            kube,
            log,
            args.environment,
            args.reason,
            to_slot=args.to_slot,
            force=args.force,
            rollback_worker=not args.skip_worker,
            bad_image=args.bad_image,
        )
    except DeployError as exc:
        print(f"rollback failed: {exc}", file=sys.stderr)
        return 1
    if result.from_slot == result.to_slot:
        print(f"live slot {result.to_slot} kept ({result.to_image}); canary weight 0")
    else:
        print(
            f"rolled back {args.environment}: live slot {result.from_slot} -> {result.to_slot} "
            f"({result.from_image} -> {result.to_image}); logged to {args.log}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
