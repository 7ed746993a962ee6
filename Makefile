# sms-outbox: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create .venv and install the project with its dev tools

LOCK_ARGS ?=
.PHONY: lock
lock: $(STAMP) ## Regenerate requirements.lock (hashed runtime pins) from pyproject's ranges; LOCK_ARGS=--upgrade for newest
	$(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --universal --python-version 3.11 \
		--custom-compile-command 'make lock' --output-file requirements.lock $(LOCK_ARGS)

.PHONY: install-prod
install-prod: ## Production install into .venv: requirements.lock (hashes required), then the project without dev tools
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps .
	rm -f $(STAMP) $(BENCH_STAMP)  # the dev targets reinstall their tools

.PHONY: run
run: $(STAMP) ## Start PostgreSQL (embedded unless DATABASE_URL is set), migrate, and run the Procfile (API_WORKERS API processes; default one per core)
	$(BIN)/python -m tooling.devstack

.PHONY: migrate
migrate: $(STAMP) ## Apply pending migrations to DATABASE_URL
	$(BIN)/python -m shared.migrate

.PHONY: test
test: $(STAMP) ## Run the whole test suite against an embedded PostgreSQL
	$(BIN)/python -m pytest $(PYTEST_ARGS)

.PHONY: unit
unit: $(STAMP) ## Run only the unit tier (tests/unit: no database, seconds)
	$(BIN)/python -m pytest tests/unit -q $(PYTEST_ARGS)

BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	touch $(BENCH_STAMP)

.PHONY: bench
bench: $(BENCH_STAMP) ## Measure enqueue and dispatch against this machine's limits and pgqueuer (writes bench/results/latest.json)
	$(BIN)/python -m bench $(BENCH_ARGS)

.PHONY: profile
profile: $(BENCH_STAMP) ## Flame graphs (py-spy) of the API under the enqueue load and of the dispatcher draining (bench/results/profile-*.svg)
	$(BIN)/python -m bench.profile $(PROFILE_ARGS)

.PHONY: chaos
chaos: $(BENCH_STAMP) ## Fault harness: inject faults under load, count lost/doubled/stuck messages (CHAOS_ARGS=--quick for CI)
	$(BIN)/python -m chaos $(CHAOS_ARGS)

.PHONY: screenshots
screenshots: $(STAMP) ## PNGs of each ops console page at 1280 and 390 px from a seeded scratch database (docs/screenshots; needs chromium)
	$(BIN)/python -m tooling.screenshots

.PHONY: fmt
fmt: $(STAMP) ## Format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: lint
lint: $(STAMP) ## Format check, lint, types and import contracts
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

.PHONY: check
check: lint test ## What CI should run: lint, types, import contracts, tests

.PHONY: clean
clean: ## Remove the virtualenv and caches (keeps .data/)
	rm -rf $(VENV) .mypy_cache .ruff_cache *.egg-info
