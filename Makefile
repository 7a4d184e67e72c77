# The two commands of the README: `make demo` (run the system) and `make test` (run every test).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

# Both targets share $(VENV), each with its own marker: `make demo` installs lastmile alone (no test
# tools), `make test` lastmile with its test extra. Either order works: the second adds what it lacks.
$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed-demo: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# `make demo DEMO_ARGS="--base-port 9700"` when ports 8700-8702 are taken.
DEMO_ARGS ?=
.PHONY: demo test system-deps bench
demo: $(VENV)/.installed-demo
	$(VENV)/bin/lastmile demo --data data/demo $(DEMO_ARGS)

# Debian packages the tests use: Chromium and CJK fonts for the browser tests, poppler-utils
# (pdftoppm, pdftotext, pdfinfo) to read the printed documents back (tests/e2e/test_printed_qr.py),
# installed only when missing and when we may (root).
system-deps:
	@missing=""; for p in chromium fonts-noto-cjk poppler-utils; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "please install:$$missing (sudo apt-get install$$missing)"; fi; \
	fi

# First the import contracts (pyproject.toml [tool.importlinter]: who may import whom), then the tests.
# The files run on every core (pytest-xdist), one file's tests on one worker (their servers and
# browser are module fixtures), the longest files first (tests/conftest.py LONGEST_FIRST; xdist
# would reorder them by number of tests); `make test PYTEST_ARGS=-n0` runs them one after another.
PYTEST_ARGS ?= -n auto --dist loadfile --no-loadscope-reorder
test: $(VENV)/.installed system-deps
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) bench/sync_link.py
