# Two commands on a fresh machine: `make demo` and `make test`. Each sets up .venv itself.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fbk-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: install demo test test-fast bench clean up

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/fbk demo

test: install
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) benchmarks/bench_ingest.py

clean:
	rm -rf data .pytest_cache

# Embedded stack (airflow standalone + mlflow ui on the local stores); Ctrl-C stops it.
up: install
	VENV_BIN=$(VENV)/bin scripts/up.sh

# A real distributed run (CeleryExecutor on local PostgreSQL + Redis, MLflow server), torn down after.
.PHONY: cluster
cluster: install
	$(PY) scripts/cluster.py run
