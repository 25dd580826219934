# Downstream evaluations of every pre-trained run, plus a randomly initialized encoder per
# backbone and seed (the floor every pre-trained variant must beat).

TASK_FEATURES = {"kinetics": "kinetics", "audioset": "audioset", "msrvtt": "msrvtt", "noise": "howto100m"}


def run_dir(backbone, variant, seed):
    return f"{RESULTS}/pretrain/{backbone}/{variant}/seed{seed}"


rule evaluate:
    input:
        summary=f"{RESULTS}/pretrain/{{backbone}}/{{variant}}/seed{{seed}}/summary.json",
        features=lambda wildcards: f"{FEATURES}/{TASK_FEATURES[wildcards.task]}/index.parquet",
    output:
        f"{RESULTS}/eval/{{task}}/{{backbone}}/{{variant}}/seed{{seed}}/metrics.json",
    params:
        slice=lambda wildcards: variant_slice(wildcards.variant) + cfg_slice("evaluate"),
        checkpoint=lambda wildcards: run_dir(wildcards.backbone, wildcards.variant, wildcards.seed),
        out=lambda wildcards, output: str(Path(output[0]).parent),
    log:
        f"{RESULTS}/logs/evaluate/{{task}}/{{backbone}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{task}}/{{backbone}}/{{variant}}/seed{{seed}}.tsv"
    wildcard_constraints:
        task="|".join(TASK_FEATURES),
        variant=VARIANT_PATTERN,
    threads: 1
    resources:
        mem_mb=3000,
        gpu=0,
    run:
        run_logged(
            cmgh_cmd("evaluate", "--task", wildcards.task, "--checkpoint", params.checkpoint, "--out", params.out, "--threads", str(threads)),
            log[0],
            rule="evaluate",
        )


rule evaluate_random_init:
    input:
        summary=lambda wildcards: f"{run_dir(wildcards.backbone, REFERENCE_VARIANT, wildcards.seed)}/summary.json",
        features=lambda wildcards: f"{FEATURES}/{TASK_FEATURES[wildcards.task]}/index.parquet",
    output:
        f"{RESULTS}/eval/{{task}}/{{backbone}}/random/seed{{seed}}/metrics.json",
    params:
        slice=lambda wildcards: cfg_slice("model", "features", "evaluate"),
        checkpoint=lambda wildcards: run_dir(wildcards.backbone, REFERENCE_VARIANT, wildcards.seed),
        out=lambda wildcards, output: str(Path(output[0]).parent),
    log:
        f"{RESULTS}/logs/evaluate/{{task}}/{{backbone}}/random/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{task}}/{{backbone}}/random/seed{{seed}}.tsv"
    wildcard_constraints:
        task="|".join(TASK_FEATURES),
    threads: 1
    resources:
        mem_mb=3000,
        gpu=0,
    run:
        run_logged(
            cmgh_cmd("evaluate", "--task", wildcards.task, "--checkpoint", params.checkpoint, "--out", params.out,
                     "--random-init", "--threads", str(threads)),
            log[0],
            rule="evaluate_random_init",
        )
