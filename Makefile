# mlproject-runner. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-packages run run-example test unit stress chaos bench lint clean try-slurm try-ray

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode -e '.[dev]'
	@# This machine sets PYTHONDONTWRITEBYTECODE=1: compile our own sources once so
	@# the editable install does not recompile them on every start.
	$(BIN)/python -m compileall -q runner >/dev/null
	touch $(STAMP)

# The wine example on the embedded defaults: a uv environment built from its
# python_env.yaml (once; later runs reuse it) and the local sqlite store ./mlflow.db.
RUN_DIR ?= .
run: setup run-example

run-example:
	cd $(RUN_DIR) && $(CURDIR)/$(BIN)/mlproject run $(CURDIR)/example_projects/sklearn_elasticnet_wine -P alpha=0.5
	cd $(RUN_DIR) && $(CURDIR)/$(BIN)/mlproject runs list --limit 1
	@echo "The run and its metrics and model are in $(abspath $(RUN_DIR))/mlflow.db; look at them with:"
	@echo "  $(CURDIR)/$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath $(RUN_DIR))/mlflow.db"
	@echo "The mlproject command is $(CURDIR)/$(BIN)/mlproject; to have it on your PATH:"
	@echo "  source $(CURDIR)/$(BIN)/activate     (this shell), or: uv tool install $(CURDIR)   (or pipx install)"

# What the tests take from the system, each for a real component they start themselves:
# git and sshd (git servers on loopback), docker.io and mmdebstrap (a private dockerd and
# its base image), openssl (a certificate for the HTTPS tracking tests), slurm-wlm (a
# two-node Slurm cluster for the slurm backend). Installed with
# apt-get when missing and run as root; otherwise the exact command to run is printed.
system-packages:
	@missing=""; \
	command -v git >/dev/null || missing="$$missing git"; \
	[ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	command -v ssh-keygen >/dev/null || missing="$$missing openssh-client"; \
	[ -x /usr/sbin/dockerd ] || missing="$$missing docker.io"; \
	command -v mmdebstrap >/dev/null || missing="$$missing mmdebstrap"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	[ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] || missing="$$missing slurm-wlm"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "error: the tests need these system packages:$$missing"; \
		echo "hint: sudo apt-get update && sudo apt-get install -y$$missing"; \
		exit 2; \
	fi; \
	echo "== apt-get install$$missing (once; about 1-2 minutes)"; \
	start=$$(date +%s); \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null; \
	echo "== system packages installed in $$(( $$(date +%s) - start )) s"

test: setup system-packages
	$(BIN)/python -m pytest -q -m "not stress" tests

# The unit tier: parsers, parameters, sweep spaces and searches, the settle decision table;
# no server, no cluster, and mlflow made unimportable (a unit test that needs it fails). Seconds.
unit: setup
	MLPROJECT_TESTS_UNIT_TIER=1 $(BIN)/python -m pytest -q -m unit tests

# Load and fault tests too heavy for every CI run (see docs/reliability.md).
stress: setup
	$(BIN)/python -m pytest -q -m stress tests

# The fault campaign (tests/chaos.py; docs/reliability.md): real runs of every local kind, each
# struck once at a random instant of its life; a violation's seed and index replay it
# (`python -m tests.chaos --replay SEED:INDEX`). `make test` runs a short version of it.
CHAOS_RUNS ?= 2000
CHAOS_SEED ?= 20261204
chaos: setup system-packages
	$(BIN)/python -m tests.chaos --runs $(CHAOS_RUNS) --seed $(CHAOS_SEED)

bench: setup system-packages
	@# Timings of our own code, not of compiling it: PYTHONDONTWRITEBYTECODE=1 here means
	@# sources changed since `make setup` would otherwise be compiled again on every start.
	$(BIN)/python -m compileall -q runner >/dev/null
	$(BIN)/python benchmarks/run.py

# The two-node Slurm and Ray clusters the tests start, kept up to try the backends on (without
# a cluster of one's own): the settings to pass are printed; Ctrl-C stops the cluster.
try-slurm: setup system-packages
	$(BIN)/python tests/trycluster.py slurm

try-ray: setup
	$(BIN)/python tests/trycluster.py ray

lint: setup
	$(BIN)/ruff check runner tests benchmarks
	$(BIN)/pyright

clean:
	rm -rf $(VENV) build dist .pytest_cache
