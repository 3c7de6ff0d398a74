# Two commands on a fresh machine: `make run` and `make test`.
# Everything installs from uv.lock (versions and hashes); `make lock` refreshes it on purpose.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# uv itself comes from PyPI by pip, in a venv of its own (.uv), pinned with hashes in
# tools/uv-requirements.txt.
UV_DIR := .uv
UV := $(UV_DIR)/bin/uv
# Test files in parallel: most integration tests wait on real processes, not on the CPU,
# so four workers fit two cores (one file stays in one worker: its fixtures are shared).
# Files are handed out in collection order, the longest first (tests/conftest.py;
# --no-loadscope-reorder, or xdist would order them by their number of tests).
TEST_WORKERS ?= 4
# uv uses the Python it is given and never downloads one; the project's environment is .venv.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Bytecode is compiled once, at install: where PYTHONDONTWRITEBYTECODE is set (as on CI),
# every process would otherwise compile its imports anew (about 1.4 s of CPU per process
# start, and the tests start hundreds of processes).
SYNC := $(UV) sync --locked --python $(PYTHON) --compile-bytecode
# The project's own modules, compiled where they changed (a tenth of a second otherwise).
COMPILE := $(PY) -m compileall -q -j 0 server workers

.PHONY: run test lint lock upgrade bench clean

$(UV): tools/uv-requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Darkroom needs Python 3.11+ (set PYTHON=python3.x)"; exit 1; }
	test -x $(UV_DIR)/bin/python || $(PYTHON) -m venv $(UV_DIR)
	$(UV_DIR)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
		--require-hashes -r tools/uv-requirements.txt
	touch $(UV)

# `make run` needs the runtime packages only (--inexact keeps test tools already there);
# `make test` installs the whole lock, test tools included, and nothing else.
$(VENV)/.run-stamp: $(UV) pyproject.toml uv.lock Makefile
	$(SYNC) --inexact
	touch $@

$(VENV)/.test-stamp: $(UV) pyproject.toml uv.lock Makefile
	$(SYNC) --extra test
	touch $@ $(VENV)/.run-stamp

run: $(VENV)/.run-stamp
	@$(COMPILE)
	$(PY) -m server.launcher

# Coverage counts every process the tests start (pyproject [tool.coverage]); server/ and
# workers/ must each reach their floor (set a little below what they reach: 96 % and 93 %,
# which moves by a point from run to run).
COVERAGE_FLOOR_SERVER ?= 94
COVERAGE_FLOOR_WORKERS ?= 90
test: $(VENV)/.test-stamp
	$(PY) -m ruff check server workers tests bench
	@# While mypy uses one core, pytest rewrites the test modules' asserts once, untraced,
	@# and keeps them in __pycache__ (written even where PYTHONDONTWRITEBYTECODE is set, as
	@# on CI; read there too): otherwise each of the test processes below rewrites every
	@# module again under coverage (17 s of CPU each untraced, more traced). Its errors
	@# show in the run itself.
	@PYTHONDONTWRITEBYTECODE= timeout 300 $(PY) -m pytest --collect-only -q \
		-p no:cacheprovider >/dev/null 2>&1 & warm=$$!; \
	echo "$(PY) -m mypy"; $(PY) -m mypy; status=$$?; wait $$warm; exit $$status
	@# The browser client's pure modules (web/js); CI must run them, elsewhere Node is optional.
	@if command -v node >/dev/null 2>&1; then node --test --test-reporter=spec tests/web/js/*.test.mjs; \
	elif [ -n "$$CI" ]; then echo "node not found: CI needs it for tests/web/js" >&2; exit 1; \
	else echo "node not found: JS unit tests skipped"; fi
	rm -f .coverage .coverage.*
	@$(COMPILE)
	$(PY) -m coverage run -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
		--durations=15
	@# A process killed (kill -9, as the crash tests do) just as it began saving its data
	@# leaves an empty data file, which combine would only warn about.
	find . -maxdepth 1 -name '.coverage.*' -empty -delete
	$(PY) -m coverage combine --quiet
	$(PY) -m coverage report --fail-under=0
	@printf 'server/ lines covered (floor %s %%): ' $(COVERAGE_FLOOR_SERVER)
	@$(PY) -m coverage report --include='server/*' --format=total \
		--fail-under=$(COVERAGE_FLOOR_SERVER)
	@printf 'workers/ lines covered (floor %s %%): ' $(COVERAGE_FLOOR_WORKERS)
	@$(PY) -m coverage report --include='workers/*' --format=total \
		--fail-under=$(COVERAGE_FLOOR_WORKERS)

lint: $(VENV)/.test-stamp
	$(PY) -m ruff check server workers tests bench
	$(PY) -m mypy

# Re-resolve uv.lock from pyproject.toml, keeping every pin that still fits (add a package
# to pyproject.toml, then `make lock`); `make upgrade` moves every package to its newest.
lock: $(UV)
	$(UV) lock --python $(PYTHON)

upgrade: $(UV)
	$(UV) lock --upgrade --python $(PYTHON)

bench: $(VENV)/.test-stamp
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(UV_DIR) var .pytest_cache
