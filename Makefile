# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Test files in parallel: most integration tests wait on real processes, not on the CPU,
# so three workers fit two cores (one file stays in one worker: its fixtures are shared).
TEST_WORKERS ?= 3
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Darkroom needs Python 3.11+ (set PYTHON=python3.x)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m server.launcher

test: $(STAMP)
	$(PY) -m ruff check server workers tests bench
	$(PY) -m mypy
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(PY) -m ruff check server workers tests bench
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) var .pytest_cache
