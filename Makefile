# qscale developer entry points. `make demo` runs the main job, `make test` the tests.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
export QSCALE_CACHE ?= /var/cache/qscale

.PHONY: venv services test-tools lint test test-fast controller-chaos

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

services:
	bash hack/services.sh

# Fault-injection and chart-lint tools the tests drive (toxiproxy, kube-score from Go
# modules; checkov from PyPI in its own virtualenv), cached by version.
test-tools:
	bash hack/test-tools.sh

lint: venv
	$(VENV)/bin/ruff check worker controller tests bench
	$(VENV)/bin/mypy

# Fast feedback: unit + broker integration tests, no cluster.
test-fast: venv services test-tools lint
	$(VENV)/bin/pytest -m 'not k8s and not e2e' $(PYTEST_ARGS)

# The README's test command (what CI runs): everything, against real brokers and the kind
# cluster: lint and types, the offline cluster, chart lint + kubeconform, kube-score and
# Checkov on every ci/*-values.yaml render (hack/chart-lint.py: clean or justified in
# hack/chart-lint-exceptions.yaml), k8s/ in sync with the chart, then the whole pytest suite
# (unit, integration, chart, k8s with the controller fault-injection suite, e2e). Nothing skips.
test: venv services test-tools lint cluster
	bash hack/chart-check.sh
	$(VENV)/bin/python hack/chart-lint.py
	$(MAKE) --no-print-directory k8s-check
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# --- the worker checker and the fuzzers, longer than their parts in `make test` ---
.PHONY: soak fuzz

# Generated work and faults (kills, drains, broker SIGKILL, network faults) for ~6 min per
# broker; results in artifacts/checker/*.json (summarised in README). QSCALE_SOAK_* scale it.
SOAK_TIMEOUT ?= 2400
soak: venv services test-tools
	QSCALE_CHECK_SCALE=soak $(VENV)/bin/pytest -s -p no:cacheprovider --timeout $(SOAK_TIMEOUT) tests/checker $(PYTEST_ARGS)

# Coverage-guided fuzzing of decode (raw bytes and an envelope grammar), FUZZ_SECONDS each;
# crashers land in tests/fuzz/crashers/ and become regression tests.
FUZZ_SECONDS ?= 600
fuzz: venv
	$(VENV)/bin/python -m tests.fuzz.run_atheris decode --seconds $(FUZZ_SECONDS)
	$(VENV)/bin/python -m tests.fuzz.run_atheris envelope --seconds $(FUZZ_SECONDS)

# The controller's fault-injection suite, long: every fault of tests/k8s/test_controller_chaos.py
# in QSCALE_CHAOS_ROUNDS shuffled rounds (default 6, ~15 min; `make test` runs one round).
# It prints "busy pods killed: N" and the other invariants; README records the last result.
controller-chaos: venv services test-tools cluster
	QSCALE_CHAOS_ROUNDS=$${QSCALE_CHAOS_ROUNDS:-6} $(VENV)/bin/pytest -s -p no:cacheprovider \
	  tests/k8s/test_controller_chaos.py $(PYTEST_ARGS)

# The multi-node scenarios (tests/e2e/multinode) on a kind cluster of their own: one control
# plane and two worker nodes, created if missing and kept for reruns (`make cluster-down
# QSCALE_CLUSTER_NAME=qscale-multi` deletes it). Results recorded in README.
MULTINODE_CLUSTER ?= qscale-multi
.PHONY: test-multinode
test-multinode: venv services test-tools
	QSCALE_CLUSTER_NAME=$(MULTINODE_CLUSTER) QSCALE_KIND_WORKERS=2 QSCALE_MULTINODE=1 \
	  $(VENV)/bin/pytest -s -p no:cacheprovider tests/e2e/multinode $(PYTEST_ARGS)

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

# --- image, Helm chart and plain manifests (hack/build-image.sh, hack/gen-k8s.sh) ---
.PHONY: image images image-check chart-check k8s-gen k8s-check

# The qscale image (wheelhouse built here for the image's Python, image build offline);
# LOAD=1 loads it into kind. With a package index, plain `docker build .` works too.
image:
	bash hack/build-image.sh $(if $(LOAD),--load) qscale

# qscale plus the broker and monitoring images the chart uses (qscale-redis, -rabbitmq, -prometheus).
images:
	bash hack/build-image.sh $(if $(LOAD),--load) all

# Image builds beyond make test's (tests/image/heavy; docs/images.md has the last run):
# `docker build .` from the package index with no wheelhouse (Debian base: no registry
# here), and the offline build with each other host Python found (3.10, 3.12, 3.13).
image-check: venv services
	QSCALE_IMAGE_HEAVY=1 $(VENV)/bin/pytest -p no:cacheprovider tests/image $(PYTEST_ARGS)

# helm lint --strict (every ci/*-values.yaml), kubeconform against offline 1.34 schemas, chart unit tests.
chart-check: venv test-tools
	bash hack/chart-check.sh
	$(VENV)/bin/python hack/chart-lint.py
	$(VENV)/bin/pytest -q tests/chart $(PYTEST_ARGS)

# Regenerate k8s/ (kustomize base + overlays) from the chart.
k8s-gen:
	bash hack/gen-k8s.sh

# Fail when k8s/ differs from what the chart renders now.
k8s-check:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && bash hack/gen-k8s.sh "$$tmp" \
	  && diff -r k8s/base "$$tmp/base" && diff -r k8s/overlays "$$tmp/overlays" \
	  && echo "k8s-check: k8s/ matches the chart"

# --- generated references (docs/reference: settings, CLI, WorkerPool, task API; chart values) ---
.PHONY: docs

# Rewrite docs/reference/*.md from the code and the chart README's values table from
# values.yaml; tests/unit/test_docs_reference.py and tests/chart/test_schema.py fail when stale.
docs: venv
	$(VENV)/bin/python hack/gen-docs.py
	$(VENV)/bin/python hack/chart-readme.py

# --- the demo (README quickstart): cluster, images, chart, a live autoscaling burst ---
.PHONY: demo

# Creates/reuses everything, submits a burst, shows scaling live. BROKER=rabbitmq for RabbitMQ.
demo:
	bash hack/demo.sh

# --- benchmarks (bench/README.md) ---
.PHONY: bench bench-keda
$(VENV)/.bench-installed: $(VENV)/.installed
	$(VENV)/bin/pip install -q -e '.[bench]'
	touch $@

# qscale vs Celery, Dramatiq and RQ on the local Redis and RabbitMQ: median tasks/s of
# 3 rounds, ratios, bench/results/latest.json and throughput.png. BENCH_ARGS adds flags
# (e.g. BENCH_ARGS="--repeat 1 --noop-tasks 5000" for a quick look).
bench: $(VENV)/.bench-installed services
	$(VENV)/bin/python -m bench.run --repeat 3 $(BENCH_ARGS)

# Real KEDA vs qscale on a kind cluster of its own (BENCH_KEDA_CLUSTER, default qscale-bench:
# created if missing, deleted afterwards; never the shared cluster, KEDA is cluster-wide).
# KEDA is built from its Go module (hack/keda.sh, cached by version); every trace of
# BENCH_KEDA_TRACES on Redis and RabbitMQ with the four scalers side by side
# (python -m bench.keda --help), then the same traces in the simulator.
# Results: BENCH_KEDA_OUT (RESULTS.md, results.json, CALIBRATION.md, one PNG per trace and
# broker); raw records in artifacts/bench-keda/raw. About 2.2 h warm for the whole trace
# set; BENCH_KEDA_ARGS adds flags (e.g. "--only burst --brokers redis").
BENCH_KEDA_CLUSTER ?= qscale-bench
BENCH_KEDA_TRACES ?= bench/keda/traces.yaml
BENCH_KEDA_OUT ?= bench/results/keda
bench-keda: venv
	$(VENV)/bin/python -m bench.keda run --cluster $(BENCH_KEDA_CLUSTER) \
	  --traces $(BENCH_KEDA_TRACES) --out $(BENCH_KEDA_OUT) $(BENCH_KEDA_ARGS)
	$(VENV)/bin/python -m bench.keda sim $(BENCH_KEDA_OUT) --traces $(BENCH_KEDA_TRACES) \
	  > $(BENCH_KEDA_OUT)/CALIBRATION.md.tmp
	mv -f $(BENCH_KEDA_OUT)/CALIBRATION.md.tmp $(BENCH_KEDA_OUT)/CALIBRATION.md
	cat $(BENCH_KEDA_OUT)/CALIBRATION.md
