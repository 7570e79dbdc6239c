# envctl: `make test` installs everything from scratch and runs every gate;
# `make run` starts the controller on a local sandbox with embedded defaults.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := .tools

# jsii (under cdktf) prints a banner on Node 20; both spellings across jsii versions.
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 18,20
export ENVCTL_TOOLS_DIR := $(CURDIR)/$(TOOLS)

.PHONY: install tools lint typecheck unit test run bench mutate schema clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

tools: install
	PYTHON=$(PY) bash scripts/install-toolchain.sh

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: install
	$(VENV)/bin/mypy

test: install tools lint typecheck
	$(VENV)/bin/coverage erase
	$(VENV)/bin/pytest --cov --cov-report= $(PYTEST_ARGS)
	# Data files a subprocess wrote after pytest-cov combined (none is the usual case).
	if compgen -G '.coverage.*' >/dev/null; then $(VENV)/bin/coverage combine --append; fi
	$(VENV)/bin/coverage report --include='stack/*' --fail-under=100
	$(VENV)/bin/coverage report --include='controller/*' --fail-under=90

run: install tools
	$(PY) -m bench.sandbox

# Mutation testing of the planner, work queue, status transitions, feedback ordering and the
# held-destroy confirmation (minutes; not in `make test`). Survivors are listed at the end.
mutate: install
	$(VENV)/bin/pip install --quiet 'mutmut>=3.8,<4'
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children 2
	$(VENV)/bin/mutmut results

# The JSON Schema of envctl.yaml, from the settings model (a test checks the shipped file is current).
schema: install
	$(PY) -c 'import json; from controller.settings import schema; print(json.dumps(schema(), indent=2, sort_keys=True))' > environments/envctl.schema.json

bench: install tools
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(TOOLS) .envctl cdktf.out .pytest_cache .mypy_cache .ruff_cache .coverage* mutants
