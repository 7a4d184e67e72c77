# The two commands of the README: `make demo` (run the system) and `make test` (run every test).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

.PHONY: demo test system-deps bench
demo: $(VENV)/.installed
	$(VENV)/bin/lastmile demo --data data/demo

# Debian packages the tests use: Chromium and CJK fonts for the browser tests,
# installed only when missing and when we may (root).
system-deps:
	@missing=""; for p in chromium fonts-noto-cjk; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "please install:$$missing (sudo apt-get install$$missing)"; fi; \
	fi

test: $(VENV)/.installed system-deps
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) bench/sync_link.py
