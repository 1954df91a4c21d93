# The one entry point. Every target installs what it needs and is safe to run twice.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LINT_STAMP := $(VENV)/.installed-lint

.PHONY: demo test unit lint deps python-deps system-deps controlplane tools bench down crds images

## demo: the main job on the embedded dev cluster (control plane + wallet-rpc pool + operator + escrows)
demo: deps controlplane
	$(PY) hack/demo.py

## test: the whole test suite (unit + integration on the real dev cluster, the chart with the built images)
test: deps controlplane tools images
	$(PY) -m pytest $(PYTEST_ARGS)

## unit: only the tests that need no cluster
unit: python-deps
	$(PY) -m pytest -m 'not integration' $(PYTEST_ARGS)

## lint: ruff (lint and format check), mypy (strict on the operator) and import-linter (the layers of docs/design.md); reports all
lint: $(LINT_STAMP)
	@status=0; \
	for tool in "ruff check ." "ruff format --check ." mypy "lint-imports --no-logo"; do \
		echo "+ $$tool"; $(VENV)/bin/$$tool || status=1; \
	done; \
	exit $$status

deps: system-deps python-deps

system-deps:
	@hack/install-system-deps.sh

python-deps: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

$(LINT_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,lint]'
	touch $(LINT_STAMP)

## controlplane: etcd, kube-apiserver, kube-controller-manager, kubectl built from their Go modules (cached)
controlplane:
	@hack/build-controlplane.sh >/dev/null

## tools: helm, kustomize and kind built from their Go modules into the same cache
tools: controlplane
	@hack/build-tools.sh >/dev/null

## bench: throughput benchmark on the dev cluster (see docs/performance.md)
bench: deps controlplane
	$(PY) hack/bench $(BENCH_ARGS)

## crds: regenerate crds/ from the API models, and the chart's copies and the kustomize base from them
crds: python-deps tools
	$(PY) -m escrow_operator.api.crdgen
	hack/render-manifests.sh

## images: the operator (distroless and debian) and wallet-rpc images with podman, bases made locally when unpullable
images:
	hack/images.sh

## down: stop a dev cluster left running by `make demo`
down: python-deps
	$(PY) -m hack.devcluster down
