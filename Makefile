# Every target does its own set-up: a fresh machine needs only Python 3.11 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-postgres lint typecheck pytest bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m syncrecon demo

test: lint typecheck pytest docs

lint: $(STAMP)
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

# The PostgreSQL backend's tests against a real server: the one SYNCRECON_TEST_POSTGRES_URL
# names, else a private one the test session starts and stops, from Debian's postgresql
# binaries (.ci/postgres installs them when missing; root or sudo). `make test` runs them too,
# and skips them loudly when there is neither.
test-postgres: $(STAMP)
	.ci/postgres
	$(BIN)/pytest -m postgres

# Warnings are errors. A fresh .site makes every run read every page: an incremental run
# would skip the pages, and so the warnings, of the run before.
docs: $(STAMP)
	rm -rf .site
	$(BIN)/sphinx-build -W --keep-going -q -b html docs .site

bench: $(STAMP)
	$(BIN)/python -m syncrecon bench --json

clean:
	rm -rf $(VENV) .site .mypy_cache .pytest_cache .ruff_cache
