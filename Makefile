# The two commands a newcomer needs: `make run` and `make test`.
# Each creates or refreshes .venv from pyproject.toml by itself.
SHELL := /bin/bash
VENV := .venv
# The newest Python 3.11+ on PATH. Probed quietly: a pyenv shim answers `command -v` for
# versions it cannot run and complains on stderr when asked to.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	>/dev/null 2>&1 && { echo $$p; break; }; done)
HASH := $(shell cat pyproject.toml | sha1sum | cut -c1-12)

CHROMIUM := /usr/bin/chromium

.PHONY: run test lint bench venv chromium

$(VENV)/bin/python:
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required"; exit 1; }
	@echo "Creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version 2>&1), $$(command -v $(PYTHON)))"
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

# The browser tests drive Debian's Chromium through Playwright (never a downloaded
# browser). As root with apt-get, install it when missing; otherwise say why the browser
# tests will be skipped. A failed install does not stop the other tests.
chromium:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing Debian's chromium package for the browser tests..."; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get -o DPkg::Lock::Timeout=300 update -qq && \
	    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
	      chromium fonts-dejavu-core >/dev/null; } \
	  || echo "WARNING: apt-get could not install chromium; the browser tests will be skipped."; \
	else \
	  echo "NOTE: $(CHROMIUM) is missing and cannot be installed here (needs root and apt-get):"; \
	  echo "      the browser tests will be skipped. Install Debian's 'chromium' package to run them."; \
	fi

test: $(VENV)/.dev-$(HASH) chromium
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev-$(HASH)
	$(VENV)/bin/ruff check .

bench: $(VENV)/.dev-$(HASH)
	$(VENV)/bin/python bench/ledger_throughput.py
