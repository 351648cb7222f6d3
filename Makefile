# `make train` and `make test` are the two commands a newcomer needs; both set everything up first.
# Set-up is idempotent: it re-runs only when requirements.txt or pyproject.toml change.

VENV    ?= .venv
PYTHON  := $(VENV)/bin/python
ARGS    ?=
JOBS    ?= 2

.PHONY: setup setup-dev train test lint test-slow test-matrix test-function bench docs clean

$(PYTHON):
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip

# Offscreen rendering (video recording) needs Debian's OSMesa; installed when we are root, skipped otherwise.
$(VENV)/.system-deps: | $(PYTHON)
	@if dpkg -s libosmesa6 >/dev/null 2>&1; then \
		echo "libosmesa6 present"; \
	elif [ "$$(id -u)" = "0" ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libosmesa6) \
		|| echo "warning: could not install libosmesa6; offscreen rendering will be unavailable"; \
	else \
		echo "note: not root, skipping libosmesa6 (needed only for offscreen rendering without a GPU)"; \
	fi
	@touch $@

$(VENV)/.installed: requirements.txt pyproject.toml $(VENV)/.system-deps | $(PYTHON)
	$(PYTHON) -m pip install --quiet -r requirements.txt -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PYTHON) -m pip install --quiet -e ".[dev]"
	@touch $@

# The docs tools only (no runtime requirements): `make docs` works before `make setup`.
$(VENV)/.installed-docs: pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install --quiet -e ".[docs]"
	@touch $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev

train: setup
	$(PYTHON) experiment/train.py $(ARGS)

# Lint and format check (ruff, configured in pyproject.toml), then the test suite.
test: setup-dev lint
	$(PYTHON) -m pytest -n $(JOBS) --durations=15 $(ARGS)

lint: setup-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test-slow: setup-dev
	$(PYTHON) -m pytest -m slow --durations=15 $(ARGS)

# Every algorithm x every feature (video, interrupt + resume, evaluate.py, 2-trial sweep, Comet offline,
# determinism) as real tiny runs; CI runs it after `make test`.
test-matrix: setup-dev
	$(PYTHON) -m pytest -m matrix -n $(JOBS) --durations=10 $(ARGS)

# Every env x algorithm combination for two tiny epochs (FILTER=<name part> narrows it, e.g. FILTER=FetchReach).
test-function: setup
	./run_testing.sh -t function -p $(JOBS) $(if $(FILTER),-k $(FILTER))

# Our HER-SAC vs RL Zoo's SAC+HER on FetchReach-v4, seeds 0-2 (RL Zoo goes into .venv-bench, created on first use),
# then training throughput and a per-step profile against SB3's SAC+HER loop.
bench: setup
	$(PYTHON) experiment/benchmarks/benchmark.py
	$(PYTHON) experiment/benchmarks/benchmark_throughput.py

# The documentation site from docs/ into site/; --strict turns a broken link, a missing page or snippet into a failure.
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict

clean:
	rm -rf $(VENV) .venv-bench data outputs multirun testing mlflow.db .pytest_cache test_cmds.txt site
