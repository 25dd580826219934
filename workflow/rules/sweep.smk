# Optuna studies over the harmonization and curriculum hyperparameters (cmgh sweep).
# `sweep.workers` jobs (rule sweep_worker) work on one study at once, each running its share of
# `sweep.n_trials`; the rule `sweep` then tops the study up to n_trials and writes its outputs.
# Trial 0 is the baseline (the base variant's own values). tuned_variant.yaml always exists: it
# defines `variants.tuned` only if the best trial beat the baseline by more than the validation
# resolution, else `tuned` is the one-line reason (best_params.yaml's verdict), which a config
# stacking it refuses.


rule sweep_worker:
    input:
        sweep_features(),
    output:
        touch(p(layout.study_dir(RESULTS, "{study}") / "workers" / "worker{worker}.done")),
    params:
        cmgh=CMGH,
        config=RESOLVED_CONFIG,
        slice=TRIGGERS.sweep(),
        share=PLAN.worker_trials,
    log:
        job_log("sweep", "{study}/worker{worker}"),
    benchmark:
        job_benchmark("sweep", "{study}/worker{worker}")
    wildcard_constraints:
        study=STUDY_PATTERN,
        worker=r"\d+",
    threads: 1
    priority: 1
    resources:
        mem_mb=4000,
    conda:
        CONDA_ENV
    shell:
        "CMGH_RULE=sweep_worker {params.cmgh:q} sweep --study {wildcards.study:q} --worker-trials {params.share:q}"
        " --threads {threads:q} --config {params.config:q} >> {log:q} 2>&1"


rule sweep:
    input:
        sweep_inputs,
    output:
        best=p(layout.study_dir(RESULTS, "{study}") / layout.BEST_PARAMS),
        tuned=p(layout.study_dir(RESULTS, "{study}") / layout.TUNED_VARIANT),
        trials=p(layout.study_dir(RESULTS, "{study}") / layout.TRIALS),
        plots=[
            report(p(layout.study_dir(RESULTS, "{study}") / f"{plot}.png"), caption="../report/sweep.rst", category="Sweep")
            for plot in layout.SWEEP_PLOTS
        ],
    params:
        cmgh=CMGH,
        config=RESOLVED_CONFIG,
        slice=TRIGGERS.sweep(),
        n_trials=int(CFG.sweep.n_trials),
    log:
        job_log("sweep", "{study}"),
    benchmark:
        job_benchmark("sweep", "{study}")
    wildcard_constraints:
        study=STUDY_PATTERN,
    threads: 1
    priority: 1
    resources:
        mem_mb=4000,
    conda:
        CONDA_ENV
    shell:
        "CMGH_RULE=sweep {params.cmgh:q} sweep --study {wildcards.study:q} --n-trials {params.n_trials:q}"
        " --threads {threads:q} --config {params.config:q} >> {log:q} 2>&1"
