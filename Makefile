# Postier — run `make help` for the list of targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
STAMP := $(VENV)/.installed-stamp
DEMO_INVOICES ?= 500
# Invoices of the real-Airflow benchmark (prepare + send through a real Airflow; see README).
BENCH_AIRFLOW_INVOICES ?= 2000
# Airflow runs from the project's own home; the same settings serve `make demo` and `make airflow`.
export AIRFLOW_HOME ?= $(CURDIR)/.postier/airflow
export AIRFLOW__CORE__DAGS_FOLDER ?= $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER ?= $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS ?= admin:admin,jmartin:user

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: system-deps
system-deps: ## Install the Debian packages the project needs (fonts, sshd) when missing
	@./scripts/system-deps

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ requis")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==0.13.9
	$(UV) pip sync --python $(BIN)/python --quiet requirements.txt requirements-dev.txt
	$(UV) pip install --python $(BIN)/python --quiet --no-deps -e .
	touch $(STAMP)

.PHONY: install
install: system-deps $(STAMP) ## Create .venv and install the pinned dependencies

.PHONY: demo
demo: install ## Main job on built-in defaults: local PostgreSQL, demo data, a clerk's day through Airflow
	$(BIN)/postier db start
	$(BIN)/postier db migrate
	$(BIN)/postier demo seed --invoices $(DEMO_INVOICES) --seed 1
	$(BIN)/postier select --treatment factures_imprimer --limit 10
	$(BIN)/postier demo day

.PHONY: airflow
airflow: install ## Start Airflow locally (standalone) with the DAGs and local defaults
	$(BIN)/postier db start
	$(BIN)/postier db migrate
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/airflow standalone

.PHONY: bench
bench: install ## Benchmarks: figures as ratios against baselines measured in the same run
	$(BIN)/python bench/documents_bench.py
	$(BIN)/python bench/pipeline_bench.py
	$(BIN)/python bench/chunk_cpu.py 2000
	$(BIN)/python bench/storage_bench.py
	$(BIN)/python bench/airflow_bench.py --invoices $(BENCH_AIRFLOW_INVOICES)

.PHONY: test
test: install ## Run the whole test suite (starts its own PostgreSQL)
	$(BIN)/python -m pytest

.PHONY: lint
lint: install ## ruff and mypy
	$(BIN)/ruff check include dags plugins tests
	$(BIN)/ruff format --check include dags plugins tests
	$(BIN)/mypy include/postier

.PHONY: lock
lock: ## Regenerate requirements*.txt from requirements*.in
	$(BIN)/python -m pip install --quiet uv==0.13.9
	$(UV) pip compile --python-version 3.11 --quiet requirements.in -o requirements.txt
	$(UV) pip compile --python-version 3.11 --quiet requirements-dev.in -o requirements-dev.txt

.PHONY: db-stop
db-stop: ## Stop the local PostgreSQL cluster
	@test -x $(BIN)/postier && $(BIN)/postier db stop || true

.PHONY: clean
clean: db-stop ## Stop the cluster and remove local state (.postier/) and the venv
	rm -rf .postier $(VENV)
