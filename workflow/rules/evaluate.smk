# Downstream evaluations of every pre-trained run, plus a randomly initialized encoder per
# backbone and seed (the floor every pre-trained variant must beat). With `evaluate.jobs: per_task`
# (the default) one job per task and run: a changed feature set or a deleted metrics.json reruns
# that evaluation only. With `per_run` one job per run evaluates all its tasks in one process (a grid
# of many short runs saves an interpreter start per task). Noise detection over training scores each
# run's own score dumps (no encoder, no random init): a job of its own per run with a labelled corpus,
# or part of the run's job when every variant has one.


if CFG.evaluate.jobs == "per_task":

    rule evaluate:
        input:
            unpack(task_inputs),
            summary=run_file(layout.SUMMARY),
        output:
            p(layout.eval_metrics(RESULTS, "{task}", "{backbone}", "{variant}", "{seed}")),
        params:
            cmgh=CMGH,
            config=RESOLVED_CONFIG,
            slice=lambda wildcards: variant_slice(wildcards.variant) + evaluation_slice(),
            checkpoint=lambda wildcards, input: str(Path(input.summary).parent),
            out=lambda wildcards, output: str(Path(output[0]).parent),
        log:
            job_log("evaluate", "{task}/{backbone}/{variant}/seed{seed}"),
        benchmark:
            job_benchmark("evaluate", "{task}/{backbone}/{variant}/seed{seed}")
        wildcard_constraints:
            task=TASK_PATTERN,
            backbone=BACKBONE_PATTERN,
            variant=VARIANT_PATTERN,
        threads: 1
        resources:
            mem_mb=3000,
            gpu=0,
        conda:
            CONDA_ENV
        shell:
            "CMGH_RULE=evaluate {params.cmgh:q} evaluate --task {wildcards.task:q} --checkpoint {params.checkpoint:q}"
            " --out {params.out:q} --threads {threads:q} --config {params.config:q} >> {log:q} 2>&1"


    rule evaluate_random_init:
        input:
            unpack(task_inputs),
            summary=lambda wildcards: run_file(layout.SUMMARY, wildcards.backbone, REFERENCE_VARIANT, wildcards.seed),
        output:
            p(layout.eval_metrics(RESULTS, "{task}", "{backbone}", layout.RANDOM_VARIANT, "{seed}")),
        params:
            cmgh=CMGH,
            config=RESOLVED_CONFIG,
            slice=evaluation_slice("model", "features"),
            checkpoint=lambda wildcards, input: str(Path(input.summary).parent),
            out=lambda wildcards, output: str(Path(output[0]).parent),
        log:
            job_log("evaluate", f"{{task}}/{{backbone}}/{layout.RANDOM_VARIANT}/seed{{seed}}"),
        benchmark:
            job_benchmark("evaluate", f"{{task}}/{{backbone}}/{layout.RANDOM_VARIANT}/seed{{seed}}")
        wildcard_constraints:
            task=TASK_PATTERN,
            backbone=BACKBONE_PATTERN,
        threads: 1
        resources:
            mem_mb=3000,
            gpu=0,
        conda:
            CONDA_ENV
        shell:
            "CMGH_RULE=evaluate_random_init {params.cmgh:q} evaluate --task {wildcards.task:q} --checkpoint {params.checkpoint:q}"
            " --out {params.out:q} --random-init --threads {threads:q} --config {params.config:q} >> {log:q} 2>&1"

else:

    rule evaluate:
        input:
            unpack(run_evaluation_inputs),
            summary=run_file(layout.SUMMARY),
        output:
            RUN_JOB_OUTPUTS,
        params:
            cmgh=CMGH,
            config=RESOLVED_CONFIG,
            tasks=task_arguments(RUN_JOB_TASKS),
            slice=lambda wildcards: variant_slice(wildcards.variant) + evaluation_slice() + cfg_slice("evaluate.noise_training"),
            checkpoint=lambda wildcards, input: str(Path(input.summary).parent),
        log:
            job_log("evaluate", "{backbone}/{variant}/seed{seed}"),
        benchmark:
            job_benchmark("evaluate", "{backbone}/{variant}/seed{seed}")
        wildcard_constraints:
            backbone=BACKBONE_PATTERN,
            variant=VARIANT_PATTERN,
        threads: 1
        resources:
            mem_mb=3000,
            gpu=0,
        conda:
            CONDA_ENV
        shell:
            "CMGH_RULE=evaluate {params.cmgh:q} evaluate {params.tasks:q} --checkpoint {params.checkpoint:q}"
            " --threads {threads:q} --config {params.config:q} >> {log:q} 2>&1"


    rule evaluate_random_init:
        input:
            unpack(run_evaluation_inputs),
            summary=lambda wildcards: run_file(layout.SUMMARY, wildcards.backbone, REFERENCE_VARIANT, wildcards.seed),
        output:
            [p(layout.eval_metrics(RESULTS, task, "{backbone}", layout.RANDOM_VARIANT, "{seed}")) for task in PLANNED_TASKS],
        params:
            cmgh=CMGH,
            config=RESOLVED_CONFIG,
            tasks=task_arguments(PLANNED_TASKS),
            slice=evaluation_slice("model", "features"),
            checkpoint=lambda wildcards, input: str(Path(input.summary).parent),
        log:
            job_log("evaluate", f"{{backbone}}/{layout.RANDOM_VARIANT}/seed{{seed}}"),
        benchmark:
            job_benchmark("evaluate", f"{{backbone}}/{layout.RANDOM_VARIANT}/seed{{seed}}")
        wildcard_constraints:
            backbone=BACKBONE_PATTERN,
        threads: 1
        resources:
            mem_mb=3000,
            gpu=0,
        conda:
            CONDA_ENV
        shell:
            "CMGH_RULE=evaluate_random_init {params.cmgh:q} evaluate {params.tasks:q} --checkpoint {params.checkpoint:q}"
            " --random-init --threads {threads:q} --config {params.config:q} >> {log:q} 2>&1"


if not NOISE_TRAINING_IN_RUN_JOB:

    rule noise_training:
        input:
            unpack(noise_training_inputs),
            summary=run_file(layout.SUMMARY),
        output:
            metrics=p(layout.eval_metrics(RESULTS, NOISE_TRAINING, "{backbone}", "{variant}", "{seed}")),
            windows=p(layout.eval_dir(RESULTS, NOISE_TRAINING, "{backbone}", "{variant}", "{seed}") / layout.NOISE_WINDOWS),
        params:
            cmgh=CMGH,
            config=RESOLVED_CONFIG,
            task=NOISE_TRAINING,
            slice=lambda wildcards: variant_slice(wildcards.variant) + cfg_slice("evaluate.noise_training"),
            checkpoint=lambda wildcards, input: str(Path(input.summary).parent),
            out=lambda wildcards, output: str(Path(output.metrics).parent),
        log:
            job_log("evaluate", f"{NOISE_TRAINING}/{{backbone}}/{{variant}}/seed{{seed}}"),
        benchmark:
            job_benchmark("evaluate", f"{NOISE_TRAINING}/{{backbone}}/{{variant}}/seed{{seed}}")
        wildcard_constraints:
            backbone=BACKBONE_PATTERN,
            variant=VARIANT_PATTERN,
        threads: 1
        resources:
            mem_mb=2000,
            gpu=0,
        conda:
            CONDA_ENV
        shell:
            "CMGH_RULE=noise_training {params.cmgh:q} evaluate --task {params.task:q} --checkpoint {params.checkpoint:q}"
            " --out {params.out:q} --config {params.config:q} >> {log:q} 2>&1"
