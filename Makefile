# qscale developer entry points. `make demo` runs the main job, `make test` the tests.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
export QSCALE_CACHE ?= /var/cache/qscale

.PHONY: venv services lint test test-fast

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

services:
	bash hack/services.sh

lint: venv
	$(VENV)/bin/ruff check worker controller tests bench
	$(VENV)/bin/mypy

# Fast feedback: unit + broker integration tests, no cluster.
test-fast: venv services lint
	$(VENV)/bin/pytest -m 'not k8s and not e2e' $(PYTEST_ARGS)

# The README's test command (what CI runs): everything, against real brokers and the kind cluster.
test: venv services lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# --- kind cluster, built offline from package registries and source (hack/cluster.sh) ---
.PHONY: cluster cluster-down cluster-load tools

# Build every tool/image that is missing (cached in $(QSCALE_CACHE)) and bring up kind cluster "qscale".
cluster:
	bash hack/cluster.sh up

cluster-down:
	bash hack/cluster.sh down

# make cluster-load IMAGE=qscale/worker:dev  (space-separate several)
cluster-load:
	@test -n "$(IMAGE)" || { echo "usage: make cluster-load IMAGE=<local docker image>" >&2; exit 2; }
	bash hack/cluster.sh load $(IMAGE)

# kind, helm, kubeconform, kubectl into $(QSCALE_CACHE)/bin (source hack/env.sh to use them)
tools:
	bash hack/cluster.sh tools
