"""A fake kubectl for scripts/deploy.py and scripts/rollback.py: an in-memory cluster."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import rollback


def _deployment(name: str, container: str, image: str, ready: int = 2) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": {}},
        "spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}},
        "status": {"readyReplicas": ready},
    }


@dataclass
class FakeCluster:
    """Answers the kubectl commands the scripts send; records each argv."""

    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)
    stdins: list[str] = field(default_factory=list)
    prometheus: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    proxy_fail: set[str] = field(default_factory=set)
    canary_weights: list[int] = field(default_factory=list)

    @classmethod
    def blue_green(cls, live: str = "blue", old: str = "v1", new: str = "v1") -> FakeCluster:
        cluster = cls()
        other = "green" if live == "blue" else "blue"
        for slot, image in ((live, old), (other, new)):
            cluster.put(_deployment(f"privacy-finetuner-api-{slot}", "api", f"img:{image}"))
        cluster.put(_deployment("privacy-finetuner-worker", "worker", f"img:{old}", ready=1))
        for name, slot in (
            ("privacy-finetuner-api", live),
            ("privacy-finetuner-api-preview", other),
        ):
            cluster.put(
                {
                    "kind": "Service",
                    "metadata": {"name": name},
                    "spec": {"selector": {"slot": slot}},
                }
            )
        cluster.put(
            {
                "kind": "Ingress",
                "metadata": {
                    "name": "privacy-finetuner-canary",
                    "annotations": {"nginx.ingress.kubernetes.io/canary-weight": "0"},
                },
            }
        )
        cluster.put({"kind": "Secret", "metadata": {"name": "privacy-finetuner-secrets"}})
        return cluster

    def put(self, obj: dict[str, Any]) -> None:
        self.objects[(obj["kind"].lower(), obj["metadata"]["name"])] = obj

    def obj(self, kind: str, name: str) -> dict[str, Any]:
        return self.objects[(kind, name)]

    def slot(self, service: str) -> str:
        return str(self.obj("service", service)["spec"]["selector"]["slot"])

    def image(self, deployment: str) -> str:
        return str(
            self.obj("deployment", deployment)["spec"]["template"]["spec"]["containers"][0]["image"]
        )

    def __call__(self, argv: Sequence[str], stdin: str | None = None) -> rollback.CommandResult:
        args = list(argv)
        self.calls.append(args)
        if stdin is not None:
            self.stdins.append(stdin)
        assert args[0] == "kubectl"
        if args[1] == "kustomize":
            out = subprocess.run(args, capture_output=True, text=True, check=False)
            return rollback.CommandResult(out.returncode, out.stdout, out.stderr)
        assert args[1:3] == ["-n", args[2]]
        verb, rest = args[3], args[4:]
        ok = rollback.CommandResult(0, "", "")
        if verb == "get" and rest[0] == "--raw":
            return self._raw(rest[1])
        if verb == "get":
            obj = self.objects.get((rest[0], rest[1]))
            return rollback.CommandResult(0, json.dumps(obj) if obj else "", "")
        if verb == "patch":
            patch = json.loads(rest[rest.index("-p") + 1])
            self.obj(rest[0], rest[1])["spec"]["selector"].update(patch["spec"]["selector"])
            return ok
        if verb == "annotate":
            key, value = rest[2].split("=", 1)
            self.obj(rest[0], rest[1])["metadata"].setdefault("annotations", {})[key] = value
            if key.endswith("canary-weight"):
                self.canary_weights.append(int(value))
            return ok
        if verb == "set":
            name = rest[1].split("/", 1)[1]
            _container, image = rest[2].split("=", 1)
            self.obj("deployment", name)["spec"]["template"]["spec"]["containers"][0][
                "image"
            ] = image
            return ok
        if verb == "apply":
            assert stdin is not None
            doc = json.loads(stdin)
            for item in doc.get("items", [doc]):
                self.put(item)
            return ok
        if verb in ("rollout", "scale"):
            return ok
        return rollback.CommandResult(1, "", f"fake kubectl: unsupported {verb}")

    def _raw(self, path: str) -> rollback.CommandResult:
        if "/proxy/api/v1/query?" in path:
            query = urllib.parse.parse_qs(path.split("?", 1)[1])["query"][0]
            for needle, result in self.prometheus.items():
                if needle in query:
                    body = {"status": "success", "data": {"resultType": "vector", "result": result}}
                    return rollback.CommandResult(0, json.dumps(body), "")
            body = {"status": "success", "data": {"resultType": "vector", "result": []}}
            return rollback.CommandResult(0, json.dumps(body), "")
        if any(fail in path for fail in self.proxy_fail):
            return rollback.CommandResult(1, "", "Error from server (ServiceUnavailable)")
        return rollback.CommandResult(0, "ok", "")
