# Pre-training variants: one job per backbone x variant x seed (the grid comes from the config).
# Its shape comes from `pretrain.nodes` and `pretrain.gpus` (per node) through its resources, which the
# command reads back (cmgh.plan.launch): with more than one GPU the job runs data-parallel under torchrun
# (cmgh.train.distributed: nccl on CUDA, gloo on CPU), with more than one node under SLURM, one torchrun
# per node started by srun (cmgh.train.launch).


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
        nodes=pretrain_resource("nodes"),
        gpu=pretrain_resource("gpu"),  # all nodes together: the slurm executor's `sbatch --gpus`
        tasks=pretrain_resource("tasks"),  # above one node: one task per node, each a torchrun
        mpi=pretrain_resource("mpi"),  # above one node: the executor leaves starting the tasks to the command
        tasks_per_gpu=pretrain_resource("tasks_per_gpu"),
    conda:
        CONDA_ENV
    shell:
        "CMGH_RULE=pretrain {params.cmgh:q} pretrain --backbone {wildcards.backbone:q} --variant {wildcards.variant:q}"
        " --seed {wildcards.seed:q} --out {params.out:q} --threads {params.threads:q} --config {params.config:q} >> {log:q} 2>&1"
