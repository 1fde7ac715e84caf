# Agent Identity Operator — the two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test unit integration lint crds venv binaries clean-cluster bench help

help:
	@echo "make run    - build what is missing, start the local control plane, CRDs, operator, webhook, examples"
	@echo "make test   - the whole suite (lint, unit, integration on a real kube-apiserver)"
	@echo "make crds   - regenerate crds/ from the pydantic models"
	@echo "make bench  - run the benchmarks in bench/"

# The virtual environment: created and filled when missing or when pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

# The control plane's binaries (built once per version into ~/.cache/agent-identity).
binaries: $(STAMP)
	$(BIN)/agent-identity devcluster build

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: binaries
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

# pytest's exit code 5 (nothing collected) is a failure too, with a message that says so.
test: binaries lint
	@$(BIN)/pytest tests $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure, not a pass" >&2; fi; \
	  exit $$rc

crds: $(STAMP)
	$(BIN)/agent-identity crds generate --output-dir crds

run: binaries
	bash hack/run.sh

bench: binaries
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean-cluster: $(STAMP)
	-$(BIN)/agent-identity devcluster down

# --- shipping (issue 9) ---------------------------------------------------------------
.PHONY: image helm manifests run-helm run-incluster
HELM_PY := $(BIN)/python -m agent_identity.devcluster.helm

# The image localhost/agent-identity:<version> (buildah, no Docker), also as an OCI archive
# in ~/.cache/agent-identity/images/.
image: $(STAMP)
	$(BIN)/python -m agent_identity.devcluster.image

# helm v4 (built once from the Go module proxy), the chart's CRDs synced, lint --strict.
helm: crds
	$(HELM_PY) sync-crds
	$$($(HELM_PY) path) lint --strict helm/agent-identity-operator

# manifests/ (kustomize base + cert-manager overlay, Argo CD health) rendered from the chart.
manifests: helm
	$(HELM_PY) manifests

# The chart's cluster-scoped parts on the local control plane, then both processes locally.
# Uses the running local cluster (with or without its node), else starts the control plane.
run-helm: binaries helm
	@set -e; \
	if ! env_out="$$($(BIN)/agent-identity devcluster env 2>/dev/null)"; then \
	  env_out="$$($(BIN)/agent-identity devcluster up --no-node)"; fi; \
	eval "$$env_out"; \
	$(HELM_PY) cluster-scoped | kubectl apply --server-side --force-conflicts -f -; \
	kubectl wait --for condition=Established crd --all --timeout=60s; \
	trap 'kill $$op $$adm 2>/dev/null' EXIT INT TERM; \
	$(BIN)/agent-identity operator --metrics-port 9090 & op=$$!; \
	$(BIN)/agent-identity admission --dev --metrics-port 9091 & adm=$$!; \
	wait

# `make run` with the operator in-cluster: the chart installed on the local cluster's node
# with the image built here, instead of the two processes on the host.
run-incluster: binaries helm
	RUN_MODE=incluster bash hack/run.sh
