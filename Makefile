# Two commands on a fresh Debian/Ubuntu machine:
#   make demo   - run ops_http_json and the opsalt states against the bundled demo asset API
#   make test   - install what the tests need and run them (what CI runs)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTEST_ARGS ?=
# Newest releases that install from the package registry here: Salt 3008.5 and
# 3007.17 pin a certifi release it lacks.
SALT_REQUIREMENT ?= salt==3008.4

.PHONY: demo test venv system-deps bench clean lint format docs

$(VENV)/.installed: setup.cfg setup.py pyproject.toml
	scripts/check-venv-deps $(PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q '$(SALT_REQUIREMENT)' -e '.[tests]'
	touch $@

venv: $(VENV)/.installed

system-deps:
	scripts/install-system-deps

# Needs no service or tool package, only what the venv needs
# (scripts/check-venv-deps says what is missing). KEEP=1 keeps its temp dir.
demo: venv
	$(PY) demo/run_demo.py $(if $(filter-out 0,$(KEEP)),--keep)

test: system-deps venv
	$(PY) -m pytest $(PYTEST_ARGS)

# Every benchmark in turn; each prints its own table (docs/benchmarks.rst).
# v2v_bench.py runs twice: one migration, then a wave (--wave).
bench: system-deps venv
	set -e; for script in bench/*_bench.py; do echo "== $$script"; $(PY) $$script; done
	echo "== bench/v2v_bench.py --wave"; $(PY) bench/v2v_bench.py --wave

clean:
	rm -rf $(VENV) .venv-salt3006 .venv-salt3007 .demo build *.egg-info docs/_build

# The lint gate (.ci/run runs it): ruff's checks and its formatter, configured in pyproject.toml.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The documentation site, warnings as errors (.ci/run runs it).
docs: venv
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html
