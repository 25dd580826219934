# cmgh reproduction DAG. Science lives in the `cmgh` package; every rule calls its CLI.
# Usage: snakemake --cores all [--configfile config/paper.yaml] [--profile workflow/profiles/slurm]
from pathlib import Path


configfile: str(Path(workflow.basedir) / "config" / "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
