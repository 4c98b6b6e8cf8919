# The README's two commands: `make demo` (the main job on embedded defaults) and `make test`.
# Both create or refresh the local virtualenv in .venv first; torch is pinned to the CPU build by
# constraints/ci.txt.

PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= train,guard,service,dev,federated
BIN := $(VENV)/bin
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: venv demo test lint build-test bench clean

$(STAMP): pyproject.toml constraints/ci.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints/ci.txt -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

## The main job on the embedded defaults (built-in synthetic data, tiny model, SQLite, no Redis).
demo: venv
	$(BIN)/privacy-finetuner train --example support-agent

## The whole test suite (exit 5, "no tests collected", counts as a failure).
test: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/test $(PYTEST_ARGS)

## Lint gates: ruff, black, isort, mypy (strict), bandit, actionlint, hadolint, trivy config.
lint: venv
	bash scripts/lint

## Build the wheel with Poetry and import it in a fresh virtualenv (the spec's build-test job).
build-test: venv
	bash scripts/build_test

bench: venv
	$(BIN)/python benchmarks/bench_accounting.py

clean:
	rm -rf $(VENV) dist build .pytest_cache .mypy_cache .ruff_cache .hypothesis
