# mlproject-runner. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode -e '.[dev]'
	@# This machine sets PYTHONDONTWRITEBYTECODE=1: compile our own sources once so
	@# the editable install does not recompile them on every start.
	$(BIN)/python -m compileall -q runner >/dev/null
	touch $(STAMP)

# The example in a uv environment built from its python_env.yaml (once; later runs reuse it).
run: setup
	$(BIN)/mlproject run example_projects/quickstart -P rows=5 -P scale=2.5
	$(BIN)/mlproject runs list --limit 3
	@echo "Runs are tracked in ./mlflow.db: look at them with  $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db"

test: setup
	$(BIN)/python -m pytest -q tests

bench: setup
	$(BIN)/python benchmarks/run.py

lint: setup
	$(BIN)/ruff check runner tests benchmarks

clean:
	rm -rf $(VENV) build dist .pytest_cache
