# cmgh reproduction DAG. Science lives in the `cmgh` package; every rule calls its CLI.
# Usage: snakemake --cores all [--configfile config/paper.yaml] [--profile workflow/profiles/slurm]
from cmgh.config import DEFAULT_CONFIG


# The default config (the mini world) is the package's cmgh/defaults/config.yaml. --configfile
# replaces it rather than merging into it (so a config can drop variants); stack files explicitly
# to overlay: --configfile cmgh/defaults/config.yaml my-overrides.yaml
if not workflow.overwrite_configfiles:

    configfile: str(DEFAULT_CONFIG)


include: "workflow/rules/common.smk"


if WORLDS:  # config/ablation.yaml, config/study.yaml: one tree per generated world (noise setting), each a module of this Snakefile

    # the report's front page names the study's results page (set before the worlds' modules, whose own would win otherwise)
    report: "workflow/report/study.rst"


    include: "workflow/rules/worlds.smk"

else:

    include: "workflow/rules/data.smk"
    include: "workflow/rules/features.smk"
    include: "workflow/rules/pretrain.smk"
    include: "workflow/rules/evaluate.smk"
    include: "workflow/rules/report.smk"
    include: "workflow/rules/sweep.smk"


rule all:
    default_target: True
    input:
        all_targets(),
