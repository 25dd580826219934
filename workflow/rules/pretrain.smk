# Pre-training variants: one job per backbone x variant x seed (the grid comes from the config).
# With more than one GPU per job (`resources.gpu`, e.g. from a cluster profile's set-resources),
# the job runs data-parallel under torchrun (cmgh.train.distributed: nccl on CUDA, gloo on CPU).


rule pretrain:
    input:
        pretrain_inputs,
    output:
        checkpoint=run_file(layout.CHECKPOINT),
        log=run_file(layout.TRAIN_LOG),
        summary=run_file(layout.SUMMARY),
    params:
        cmgh=pretrain_launcher,
        config=RESOLVED_CONFIG,
        slice=lambda wildcards: TRIGGERS.pretrain(wildcards.variant),
        out=lambda wildcards, output: str(Path(output.checkpoint).parent),
        threads=pretrain_threads,
    log:
        job_log("pretrain", "{backbone}/{variant}/seed{seed}"),
    benchmark:
        job_benchmark("pretrain", "{backbone}/{variant}/seed{seed}")
    wildcard_constraints:
        backbone=BACKBONE_PATTERN,
        variant=VARIANT_PATTERN,
        seed=r"\d+",
    threads: 1
    priority: 2  # longest jobs first: short evaluations then fill the cores at the end of the DAG
    resources:
        mem_mb=4000,
        gpu=pretrain_gpus,
    conda:
        CONDA_ENV
    shell:
        "CMGH_RULE=pretrain {params.cmgh:q} pretrain --backbone {wildcards.backbone:q} --variant {wildcards.variant:q}"
        " --seed {wildcards.seed:q} --out {params.out:q} --threads {params.threads:q} --config {params.config:q} >> {log:q} 2>&1"
