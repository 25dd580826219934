# The noise ablation (config/ablation.yaml) and the study (config/study.yaml): this whole workflow
# once per injected noise setting (cmgh.ablation: a rate, for both pairs or for text or audio
# alone), as Snakemake modules of the root Snakefile (`module` + `use rule * from ... as
# noise0_3_*`), each with its own results tree; then one rule that compares the trees: every
# variant's downstream gain over the baseline against the noise rate, and the results page
# (<ablation.root>/README.md) with the noise-detection indicators over training and the conclusions.


include: tree_modules_file()


rule ablation:
    input:
        [p(layout.tables_dir(noise_tree(setting)) / "ablation.md") for setting in NOISE_SETTINGS],
    output:
        figure=report(p(layout.figures_dir(ablation_root()) / "noise_gain.png"), caption="../report/noise_gain.rst", category="Figures"),
        table=p(layout.tables_dir(ablation_root()) / "noise_gain.csv"),
        page=p(ablation_root() / layout.STUDY_PAGE),
    params:
        cmgh=CMGH,
        trees=lambda wildcards, input: [str(Path(table).parents[1]) for table in input],  # <tree>/tables/ablation.md
        out=lambda wildcards, output: str(Path(output.table).parents[1]),
    log:
        p(layout.job_log(ablation_root(), "ablation", "noise_gain")),
    benchmark:
        p(layout.job_benchmark(ablation_root(), "ablation", "noise_gain"))
    conda:
        CONDA_ENV
    shell:
        "CMGH_RULE=ablation {params.cmgh:q} report --noise-gain {params.trees:q} --out {params.out:q} >> {log:q} 2>&1"
