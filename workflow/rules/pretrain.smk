# Pre-training variants: one job per backbone x variant x seed (the grid comes from the config).
# With more than one GPU per job (`resources.gpu`, e.g. from a cluster profile's set-resources),
# the job runs data-parallel under torchrun (cmgh.train.distributed: nccl on CUDA, gloo on CPU).


def pretrain_gpus(wildcards):
    """GPUs of one pre-training job: the variant's `pretrain.gpus`."""
    return int(cmgh_config.for_variant(CFG, wildcards.variant).pretrain.gpus)


def pretrain_cmd(gpus, *args):
    """`cmgh pretrain ...` as an argument list; under torchrun with one process per GPU when gpus > 1."""
    if gpus <= 1:
        return cmgh_cmd("pretrain", *args)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus)]
    return [*torchrun, "-m", "cmgh", "pretrain", *args, "--config", RESOLVED_CONFIG]



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
    priority: 2  # longest jobs first: short evaluations then fill the cores at the end of the DAG
    resources:
        mem_mb=4000,
        gpu=pretrain_gpus,
    run:
        gpus = int(resources.gpu)
        run_logged(
            pretrain_cmd(
                gpus,
                "--backbone", wildcards.backbone,
                "--variant", wildcards.variant,
                "--seed", wildcards.seed,
                "--out", params.out,
                "--threads", str(max(1, threads // max(1, gpus))),  # the job's cores shared by its processes
            ),
            log[0],
            rule="pretrain",
        )
