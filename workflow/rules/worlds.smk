# A noise study (config/ablation.yaml, config/study.yaml): this whole workflow once per generated
# world, an injected noise setting (cmgh.worlds: a rate, for both pairs or for text or audio
# alone), as Snakemake modules of the root Snakefile (`module` + `use rule * from ... as
# noise0_3_*`), each with its own results tree, and one more module, `shared`, whose tree holds the
# datasets the noise does not reach (generated once, decoded once unless tokenized: cmgh.plan.Plan.shared;
# each world links them into its tree and its evaluations read them there); then one rule that
# compares the worlds: every variant's downstream gain over the baseline against the noise rate, and the results page
# (<worlds.root>/README.md) with the noise-detection indicators over training and the conclusions.


include: "worlds_common.smk"


include: world_modules_file()


rule worlds:
    input:
        tables=[p(layout.table(world_tree(setting), layout.ABLATION_TABLE, "md")) for setting in WORLDS],
        # every world's runs and evaluations too: a variant added to a finished study is run (its world's report table
        # exists and Snakemake would not rebuild it for inputs it never recorded)
        runs=[path for setting in WORLDS for path in getattr(rules, f"{worlds.module_name(setting)}_all").input],
    output:
        figure=report(p(layout.figure(worlds_root(), layout.NOISE_GAIN)), caption="../report/noise_gain.rst", category="Figures"),
        table=p(layout.table(worlds_root(), layout.NOISE_GAIN, "csv")),
        page=p(worlds_root() / layout.STUDY_PAGE),
    params:
        cmgh=CMGH,
        trees=lambda wildcards, input: [str(Path(table).parents[1]) for table in input.tables],  # <tree>/tables/ablation.md
        out=lambda wildcards, output: str(Path(output.table).parents[1]),
    log:
        p(layout.job_log(worlds_root(), "worlds", layout.NOISE_GAIN)),
    benchmark:
        p(layout.job_benchmark(worlds_root(), "worlds", layout.NOISE_GAIN))
    conda:
        CONDA_ENV
    shell:
        "CMGH_RULE=worlds {params.cmgh:q} report --noise-gain {params.trees:q} --out {params.out:q} >> {log:q} 2>&1"
