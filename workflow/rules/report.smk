# Tables, figures and the summary from every metrics.json and every run's noise-over-training
# windows (with the scaling table and figure when the variants hold YouTube-8M pairs);
# `snakemake --report` wraps them in HTML.


rule report:
    input:
        evaluation_targets(),
        run_evaluation_targets(),
    output:
        ablation=report(f"{RESULTS}/tables/ablation.md", caption="../report/ablation.rst", category="Tables"),
        csv=f"{RESULTS}/tables/ablation.csv",
        tex=f"{RESULTS}/tables/ablation.tex",
        summary=report(f"{RESULTS}/tables/summary.md", caption="../report/summary.rst", category="Tables"),
        noise_over_training=p(layout.noise_training_table(RESULTS, "csv")),
        noise_over_training_md=report(p(layout.noise_training_table(RESULTS, "md")), caption=NOISE_TRAINING_CAPTION, category="Tables"),
        hist=report(f"{RESULTS}/figures/conflict_cosine_hist.png", caption="../report/conflict_hist.rst", category="Figures"),
        fractions=report(f"{RESULTS}/figures/fractions.png", caption="../report/fractions.rst", category="Figures"),
        **NOISE_FIGURES,
        **NOISE_TRAINING_FIGURES,
        **SCALING_OUTPUTS,
    log:
        job_log("report", "report"),
    benchmark:
        job_benchmark("report", "report")
    params:
        cmgh=CMGH,
        config=RESOLVED_CONFIG,
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "CMGH_RULE=report {params.cmgh:q} report --config {params.config:q} >> {log:q} 2>&1"
