# The two commands a newcomer needs: `make run` and `make test`.
# Each creates or refreshes .venv from pyproject.toml by itself.
SHELL := /bin/bash
VENV := .venv
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && { echo $$p; break; }; done)
HASH := $(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: run test lint bench venv

$(VENV)/bin/python:
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip

$(VENV)/.run-$(HASH): $(VENV)/bin/python
	$(VENV)/bin/python -m pip install -q -e .
	@rm -f $(VENV)/.run-*; touch $@

$(VENV)/.dev-$(HASH): $(VENV)/bin/python
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.dev-* $(VENV)/.run-*; touch $@ $(VENV)/.run-$(HASH)

run: $(VENV)/.run-$(HASH)
	$(VENV)/bin/coalition run

test: $(VENV)/.dev-$(HASH)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev-$(HASH)
	$(VENV)/bin/ruff check .

bench: $(VENV)/.dev-$(HASH)
	$(VENV)/bin/python bench/ledger_throughput.py
