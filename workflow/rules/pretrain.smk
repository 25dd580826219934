# Pre-training variants: one job per backbone x variant x seed (the grid comes from the config).


rule pretrain:
    input:
        f"{FEATURES}/howto100m/index.parquet",
        f"{FEATURES}/vocab.json",
    output:
        checkpoint=f"{RESULTS}/pretrain/{{backbone}}/{{variant}}/seed{{seed}}/checkpoint.pt",
        log=f"{RESULTS}/pretrain/{{backbone}}/{{variant}}/seed{{seed}}/train_log.jsonl",
        summary=f"{RESULTS}/pretrain/{{backbone}}/{{variant}}/seed{{seed}}/summary.json",
    params:
        slice=lambda wildcards: variant_slice(wildcards.variant),
        out=lambda wildcards, output: str(Path(output.checkpoint).parent),
    log:
        f"{RESULTS}/logs/pretrain/{{backbone}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain/{{backbone}}/{{variant}}/seed{{seed}}.tsv"
    wildcard_constraints:
        backbone="ms|ma",
        variant=VARIANT_PATTERN,
        seed=r"\d+",
    threads: 1
    resources:
        mem_mb=4000,
        gpu=0,
    run:
        run_logged(
            cmgh_cmd(
                "pretrain",
                "--backbone", wildcards.backbone,
                "--variant", wildcards.variant,
                "--seed", wildcards.seed,
                "--out", params.out,
                "--threads", str(threads),
            ),
            log[0],
            rule="pretrain",
        )
