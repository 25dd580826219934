# Decoding into shards: the vocabulary first (pre-training captions), then one job per dataset.


rule vocab:
    input:
        vocab_inputs,
    output:
        p(layout.vocab(FEATURES)),
    params:
        cmgh=CMGH,
        config=RESOLVED_CONFIG,
        slice=cfg_slice("features"),
    log:
        job_log("vocab", "vocab"),
    benchmark:
        job_benchmark("vocab", "vocab")
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "{params.cmgh:q} data vocab --config {params.config:q} >> {log:q} 2>&1"


rule extract:
    input:
        extract_inputs,
    output:
        feature_index("{dataset}"),
    params:
        cmgh=CMGH,
        config=RESOLVED_CONFIG,
        slice=cfg_slice("features"),
    log:
        job_log("extract", "{dataset}"),
    benchmark:
        job_benchmark("extract", "{dataset}")
    wildcard_constraints:
        dataset=DATASET_PATTERN,
    threads: max(1, CFG.features.workers)
    resources:
        mem_mb=4000,
    conda:
        CONDA_ENV
    shell:
        "{params.cmgh:q} data extract --dataset {wildcards.dataset:q} --workers {threads:q} --config {params.config:q} >> {log:q} 2>&1"
