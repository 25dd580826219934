# Tables, figures and the summary from every metrics.json and every run's noise-over-training
# windows (with the scaling table and figure when the variants hold YouTube-8M pairs);
# `snakemake --report` wraps them in HTML. Its tables are the .html renderings (the report shows
# HTML in the page, Markdown only as a download); CSV, Markdown and LaTeX stay beside them.

# The report's front page: what `cmgh report` wrote (title, what ran, the headline table with intervals
# and verdicts, the per-task figure); before the report rule has run, a page that says so.
LANDING_PAGE = Path(storage_local(p(layout.landing(RESULTS, "rst")))) if STORAGE else layout.landing(RESULTS, "rst").resolve()


report: str(LANDING_PAGE) if LANDING_PAGE.is_file() else "../report/landing.rst"


rule report:
    input:
        evaluation_targets(),
        run_evaluation_targets(),
    output:
        ablation=report_table(layout.ABLATION_TABLE, "md"),
        ablation_html=report_table(layout.ABLATION_TABLE, "html", "../report/ablation.rst"),
        csv=report_table(layout.ABLATION_TABLE, "csv"),
        tex=report_table(layout.ABLATION_TABLE, "tex"),
        summary=report_table(layout.SUMMARY_TABLE, "md"),
        summary_html=report_table(layout.SUMMARY_TABLE, "html", "../report/summary.rst"),
        noise_over_training=p(layout.noise_training_table(RESULTS, "csv")),
        noise_over_training_md=p(layout.noise_training_table(RESULTS, "md")),
        noise_over_training_html=report(p(layout.noise_training_table(RESULTS, "html")), caption=NOISE_TRAINING_CAPTION, category="Tables"),
        variants=report_figure(layout.VARIANTS_FIGURE, "../report/variants_per_task.rst"),
        hist=report_figure(layout.CONFLICT_HIST_FIGURE, "../report/conflict_hist.rst"),
        fractions=report_figure(layout.FRACTIONS_FIGURE, "../report/fractions.rst"),
        curves=report_figure(layout.TRAINING_CURVES_FIGURE, "../report/training_curves.rst"),
        landing=p(layout.landing(RESULTS, "rst")),
        landing_md=p(layout.landing(RESULTS, "md")),
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
