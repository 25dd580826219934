# Downstream evaluations of every pre-trained run, plus a randomly initialized encoder per
# backbone and seed (the floor every pre-trained variant must beat). With `evaluate.jobs: per_task`
# (the default) one job per task and run: a changed feature set or a deleted metrics.json reruns
# that evaluation only. With `per_run` one job per run evaluates all its tasks in one process (a grid
# of many short runs saves an interpreter start per task). Noise detection over training scores each
# run's own score dumps (no encoder, no random init): a job of its own per run with a labelled corpus,
# or part of the run's job when every variant has one.


# One rule each for a pre-trained and a random encoder; per task or per run differ in their
# input, output and params functions and command (common.smk: evaluation_*).


rule evaluate:
    input:
        unpack(evaluation_inputs),
        shared=shared_inputs,
        summary=run_file(layout.SUMMARY),
    output:
        evaluation_outputs(random_init=False),
    params:
        **evaluation_params(random_init=False),
    log:
        job_log("evaluate", PLAN.evaluation_job(random_init=False)),
    benchmark:
        job_benchmark("evaluate", PLAN.evaluation_job(random_init=False))
    wildcard_constraints:
        **evaluation_constraints(random_init=False),
    threads: 1
    resources:
        mem_mb=3000,
        gpu=0,
    conda:
        CONDA_ENV
    shell:
        evaluation_command("evaluate", random_init=False)


rule evaluate_random_init:
    input:
        unpack(evaluation_inputs),
        shared=shared_inputs,
        summary=reference_summary,
    output:
        evaluation_outputs(random_init=True),
    params:
        **evaluation_params(random_init=True),
    log:
        job_log("evaluate", PLAN.evaluation_job(random_init=True)),
    benchmark:
        job_benchmark("evaluate", PLAN.evaluation_job(random_init=True))
    wildcard_constraints:
        **evaluation_constraints(random_init=True),
    threads: 1
    resources:
        mem_mb=3000,
        gpu=0,
    conda:
        CONDA_ENV
    shell:
        evaluation_command("evaluate_random_init", random_init=True)


if not PLAN.noise_training_in_run_job:

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
            slice=lambda wildcards: TRIGGERS.run_evaluation(wildcards.variant),
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


# The evaluation jobs above record what they track (cmgh.track.deferred: no MLflow start-up in each);
# this one job logs every record into the MLflow store once they are done (an evaluation run again
# re-logs only its own record). A tracking server is logged live by the jobs: nothing waits here then.


rule track_evaluations:
    input:
        evaluation_targets(),
        run_evaluation_targets(),
    output:
        p(Path(RESULTS) / layout.TRACKED_EVALUATIONS),
    params:
        python=PYTHON,
        config=RESOLVED_CONFIG,
    log:
        job_log("track", "evaluations"),
    benchmark:
        job_benchmark("track", "evaluations")
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "CMGH_RULE=track_evaluations {params.python:q} -m cmgh.track.deferred --config {params.config:q} --out {output:q} >> {log:q} 2>&1"
