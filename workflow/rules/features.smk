# Decoding into shards: the vocabulary first (pre-training captions), then one job per dataset.


rule vocab:
    input:
        f"{DATA}/howto100m/.complete",
    output:
        f"{FEATURES}/vocab.json",
    params:
        slice=cfg_slice("features"),
    log:
        f"{RESULTS}/logs/vocab.log",
    benchmark:
        f"{RESULTS}/benchmarks/vocab.tsv"
    threads: 1
    run:
        run_logged(cmgh_cmd("data", "vocab"), log[0])


def extract_inputs(wildcards):
    inputs = [f"{DATA}/{wildcards.dataset}/.complete"]
    if wildcards.dataset in ("howto100m", "msrvtt"):
        inputs.append(f"{FEATURES}/vocab.json")
    return inputs


rule extract:
    input:
        extract_inputs,
    output:
        f"{FEATURES}/{{dataset}}/index.parquet",
    params:
        slice=cfg_slice("features"),
    log:
        f"{RESULTS}/logs/extract/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/extract/{{dataset}}.tsv"
    threads: max(1, CFG.features.workers)
    resources:
        mem_mb=4000,
    run:
        run_logged(cmgh_cmd("data", "extract", "--dataset", wildcards.dataset, "--workers", str(threads)), log[0])
