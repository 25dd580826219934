# Raw datasets in their real layouts: generated (mini) or downloaded (paper scale). A job writes its
# dataset's annotation files, then the `.complete` stamp (its output). A checkpoint, so that readers
# can declare the raw files they read by name once it ran (common.smk: raw_inputs).


if CFG.data.source == "synth":

    checkpoint synth:
        output:
            stored(stamp("{dataset}")),
        params:
            cmgh=CMGH,
            config=RESOLVED_CONFIG,
            slice=lambda wildcards: TRIGGERS.synth(wildcards.dataset),
        log:
            job_log("synth", "{dataset}"),
        benchmark:
            job_benchmark("synth", "{dataset}")
        wildcard_constraints:
            dataset=DATASET_PATTERN,
        threads: 1
        resources:
            mem_mb=2000,
        conda:
            CONDA_ENV
        shell:
            "{params.cmgh:q} data synth --dataset {wildcards.dataset:q} --config {params.config:q} >> {log:q} 2>&1"


if CFG.data.source == "download":
    from cmgh.data.download.sources import check_config as check_download_sources

    try:  # every dataset's sources, before any job starts (as the config check above)
        check_download_sources(CFG)
    except ConfigError as exc:
        sys.exit(f"cmgh: config error: {exc}")

    checkpoint download:
        output:
            stored(stamp("{dataset}")),
        params:
            cmgh=CMGH,
            config=RESOLVED_CONFIG,
            slice=lambda wildcards: TRIGGERS.download(wildcards.dataset),
        log:
            job_log("download", "{dataset}"),
        benchmark:
            job_benchmark("download", "{dataset}")
        wildcard_constraints:
            dataset=DATASET_PATTERN,
        threads: min(4, CFG.data.download.workers)  # cutting/re-encoding clips; fetching mostly waits on the network
        resources:
            mem_mb=8000,  # AudioSet's 2M-row clip list
        conda:
            CONDA_ENV
        shell:
            "{params.cmgh:q} data download --dataset {wildcards.dataset:q} --config {params.config:q} >> {log:q} 2>&1"
