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
NGINX := /usr/sbin/nginx

.PHONY: run test lint bench venv chromium nginx

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

# The tests of deploy/nginx.conf run Debian's nginx in front of the app (nginx -t, TLS,
# slow clients cut off). As root with apt-get, install it when missing; otherwise say why
# those tests will be skipped. A failed install does not stop the other tests. The tests
# run their own nginx on free loopback ports, never the package's service (which a
# container's policy-rc.d keeps from starting, and a systemd host starts on port 80).
nginx:
	@if [ -x $(NGINX) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing Debian's nginx package for the reverse-proxy tests..."; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get -o DPkg::Lock::Timeout=300 update -qq && \
	    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
	      nginx >/dev/null; } \
	  || echo "WARNING: apt-get could not install nginx; the reverse-proxy tests will be skipped."; \
	else \
	  echo "NOTE: $(NGINX) is missing and cannot be installed here (needs root and apt-get):"; \
	  echo "      the reverse-proxy tests will be skipped. Install Debian's 'nginx' package to run them."; \
	fi

test: $(VENV)/.dev-$(HASH) chromium nginx
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev-$(HASH)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

bench: $(VENV)/.dev-$(HASH)
	$(VENV)/bin/python bench/ledger_throughput.py
