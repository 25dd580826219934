# The two commands of the README: `make reproduce` and `make test`. Both set up `.venv` first
# and skip the install when pyproject.toml has not changed since the last one.
VENV   ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
CORES  ?= all
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cmgh-installed

.PHONY: setup reproduce study test test-fast gpu-wheels clean-results

# After a failed run: if Snakemake's lock is still there, say how to clear it (a run killed hard leaves it behind).
LOCK_HINT = [ -z "$$(ls -A .snakemake/locks 2>/dev/null)" ] || echo "make: Snakemake's lock is held; if no other run is going (e.g. after a kill): $(BIN)/snakemake --unlock, then make again" >&2

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# The DAG (an interrupted job's outputs are redone: --rerun-incomplete), its self-contained HTML report
# (tables and figures with their captions), then where everything is.
reproduce: setup
	$(BIN)/snakemake --cores $(CORES) --rerun-incomplete || { $(LOCK_HINT); exit 1; }
	$(BIN)/snakemake --report results/report.html
	-@$(BIN)/cmgh browse  # where everything is: report, tables, tracked runs, dashboard (says why not, without failing, when nothing is tracked)

# The study of config/study.yaml (about 3.2 hours on 2 CPU cores: the arithmetic heads the config): results/study/README.md.
study: setup
	$(BIN)/snakemake --cores $(CORES) --rerun-incomplete --configfile config/study.yaml || { $(LOCK_HINT); exit 1; }

# pytest's exit 5 (no tests collected) fails make like any other non-zero exit.
test: setup
	$(BIN)/pytest

# The in-process tier, minutes on 2 cores: everything but the end-to-end runs marked slow.
test-fast: setup
	$(BIN)/pytest -m "not slow"

# What a bare GPU machine lacks for benchmarks/gpu_check.py (README, "Paper scale"): wheels for its Python 3.12, packed into
# gpu-wheels/bundle/ to carry with the working tree; prints the sizes and fails over the 64 MiB such a machine takes.
gpu-wheels: setup
	$(BIN)/python benchmarks/gpu_wheels.py

clean-results:
	find results -mindepth 1 ! -name .gitkeep -delete
