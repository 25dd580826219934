# Tables, figures and the summary from every metrics.json and every run's noise-over-training
# windows (with the scaling table and figure when the variants hold YouTube-8M pairs);
# `snakemake --report` wraps them in HTML.


rule report:
    input:
        evaluation_targets(),
        run_evaluation_targets(),
    output:
        ablation=report_table(layout.ABLATION_TABLE, "md", "../report/ablation.rst"),
        csv=report_table(layout.ABLATION_TABLE, "csv"),
        tex=report_table(layout.ABLATION_TABLE, "tex"),
        summary=report_table(layout.SUMMARY_TABLE, "md", "../report/summary.rst"),
        noise_over_training=p(layout.noise_training_table(RESULTS, "csv")),
        noise_over_training_md=report(p(layout.noise_training_table(RESULTS, "md")), caption=NOISE_TRAINING_CAPTION, category="Tables"),
        hist=report_figure(layout.CONFLICT_HIST_FIGURE, "../report/conflict_hist.rst"),
        fractions=report_figure(layout.FRACTIONS_FIGURE, "../report/fractions.rst"),
        curves=report_figure(layout.TRAINING_CURVES_FIGURE, "../report/training_curves.rst"),
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
