# Decoding into shards: the vocabulary first (pre-training captions), then one job per dataset.


rule vocab:
    input:
        vocab_inputs,
    output:
        p(layout.vocab(FEATURES)),
    params:
        cmgh=CMGH,
        config=RESOLVED_CONFIG,
        slice=TRIGGERS.vocab(),
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
        stored(feature_index("{dataset}")),
    params:
        cmgh=CMGH,
        config=RESOLVED_CONFIG,
        slice=TRIGGERS.extraction("decoded"),
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
        "{params.cmgh:q} data extract --dataset {wildcards.dataset:q} --format decoded --workers {threads:q} --config {params.config:q} >> {log:q} 2>&1"


rule pack:
    """A pre-training corpus as packed tar shards (features.format = packed): re-encoded clips
    that training streams with a random window and augmentation per epoch."""
    input:
        pack_inputs,
    output:
        packed_outputs("{dataset}"),
    params:
        cmgh=CMGH,
        config=RESOLVED_CONFIG,
        slice=TRIGGERS.extraction("packed"),
    log:
        job_log("pack", "{dataset}"),
    benchmark:
        job_benchmark("pack", "{dataset}")
    wildcard_constraints:
        dataset="|".join(cmgh_config.PRETRAIN_CORPORA),
    threads: max(1, CFG.features.workers)
    resources:
        mem_mb=4000,
    conda:
        CONDA_ENV
    shell:
        "{params.cmgh:q} data extract --dataset {wildcards.dataset:q} --format packed --workers {threads:q} --config {params.config:q} >> {log:q} 2>&1"
