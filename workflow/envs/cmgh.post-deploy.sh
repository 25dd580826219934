#!/usr/bin/env bash
# Runs once, inside the new environment, after Snakemake creates it from cmgh.yaml; Snakemake runs
# it from the workflow's working directory (the repository root, where the Snakefile is).
set -euo pipefail
python -m pip install --quiet -e .
