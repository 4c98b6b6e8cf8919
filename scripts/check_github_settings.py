#!/usr/bin/env python3
"""Check that `.github/settings.yml` and the workflows agree with each other and with the spec.

- every required status check names a job that exists in pr-validation.yml (matrix expanded);
- every `secrets.NAME` a workflow uses is declared in settings.yml (GITHUB_TOKEN excepted);
- every `environment:` a workflow deploys to is configured, and production needs 2 reviewers and
  a 10-minute wait timer, staging 1 reviewer (the spec's environment section);
- branch protection has the spec's rules (reviews, code owners, signed commits, up-to-date).

    python scripts/check_github_settings.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SECRET_RE = re.compile(r"secrets\.([A-Za-z_][A-Za-z0-9_]*)")


def _jobs_with_matrix(workflow: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for job_id, job in workflow.get("jobs", {}).items():
        versions = job.get("strategy", {}).get("matrix", {}).get("python-version")
        if versions:
            names.update(f"{job_id} ({v})" for v in versions)
        else:
            names.add(job_id)
    return names


def _environments(workflow: dict[str, Any]) -> set[str]:
    envs = set()
    for job in workflow.get("jobs", {}).values():
        env = job.get("environment")
        if isinstance(env, dict):
            env = env.get("name")
        if isinstance(env, str) and "${{" not in env:
            envs.add(env)
    return envs


def check(root: Path = ROOT) -> list[str]:
    """Every disagreement found, as one message each (empty when all is well)."""
    problems: list[str] = []
    settings = yaml.safe_load((root / ".github/settings.yml").read_text())
    workflows = {p.name: p for p in sorted((root / ".github/workflows").glob("*.yml"))}
    for required in ("pr-validation.yml", "release.yml", "deploy.yml", "security-monitoring.yml"):
        if required not in workflows:
            problems.append(f"missing workflow {required}")
    declared = {s for scope in settings.get("secrets", {}).values() for s in scope}
    used_envs: set[str] = set()
    for name, path in workflows.items():
        text = path.read_text()
        for secret in sorted(set(SECRET_RE.findall(text)) - {"GITHUB_TOKEN"} - declared):
            problems.append(f"{name}: secret {secret} is not declared in settings.yml")
        used_envs |= _environments(yaml.safe_load(text))
    if "pr-validation.yml" in workflows:
        jobs = _jobs_with_matrix(yaml.safe_load(workflows["pr-validation.yml"].read_text()))
        main = next(b for b in settings["branches"] if b["name"] == "main")["protection"]
        for ctx in main["required_status_checks"]["contexts"]:
            if ctx not in jobs:
                problems.append(f"required check {ctx!r} is not a job of pr-validation.yml")
        if not main["required_status_checks"].get("strict"):
            problems.append("branches must be up to date before merging (strict: true)")
        reviews = main.get("required_pull_request_reviews", {})
        if not reviews.get("require_code_owner_reviews") or not reviews.get(
            "dismiss_stale_reviews"
        ):
            problems.append("reviews must require code owners and dismiss stale approvals")
        if not main.get("required_signatures") or not main.get("enforce_admins"):
            problems.append("signed commits and enforcement for administrators are required")
    envs = {e["name"]: e for e in settings.get("environments", [])}
    for env in sorted(used_envs - set(envs)):
        problems.append(f"environment {env!r} used by a workflow is not configured")
    if envs.get("production", {}).get("required_reviewers") != 2:
        problems.append("production must require 2 reviewers")
    if envs.get("production", {}).get("wait_timer") != 10:
        problems.append("production must have a 10-minute wait timer")
    if envs.get("staging", {}).get("required_reviewers") != 1:
        problems.append("staging must require 1 reviewer")
    if not (root / ".github/CODEOWNERS").exists():
        problems.append("missing .github/CODEOWNERS")
    return problems


def main() -> int:
    problems = check()
    for problem in problems:
        print(f"settings: {problem}", file=sys.stderr)
    print(f"github settings check: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
