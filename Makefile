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

test: binaries lint
	$(BIN)/pytest tests $(PYTEST_ARGS)

crds: $(STAMP)
	$(BIN)/agent-identity crds generate --output-dir crds

run: binaries
	bash hack/run.sh

bench: binaries
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean-cluster: $(STAMP)
	-$(BIN)/agent-identity devcluster down
