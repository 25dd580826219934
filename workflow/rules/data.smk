# Raw datasets in their real layouts: generated (mini) or downloaded (paper scale).


if CFG.data.source == "synth":

    def synth_slice(wildcards):
        """What one generated dataset depends on: a knob of another dataset does not rerun it."""
        synth = CFG.to_dict()["data"]["synth"]
        keys = {k: synth[k] for k in ("seed", "concepts", "media")}
        keys[wildcards.dataset] = synth[wildcards.dataset]
        if wildcards.dataset == "howto100m":
            keys["noise"] = CFG.to_dict()["data"]["noise"]
        return json.dumps(keys, sort_keys=True)

    rule synth:
        output:
            f"{DATA}/{{dataset}}/.complete",
        params:
            slice=synth_slice,
        log:
            f"{RESULTS}/logs/synth/{{dataset}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/synth/{{dataset}}.tsv"
        threads: 1
        resources:
            mem_mb=2000,
        run:
            shell_args = cmgh_cmd("data", "synth", "--dataset", wildcards.dataset)
            run_logged(shell_args, log[0])


if CFG.data.source == "download":
    from cmgh.data.download.sources import check_config as check_download_sources

    try:  # every dataset's sources, before any job starts (as the config check above)
        check_download_sources(CFG)
    except ConfigError as exc:
        sys.exit(f"cmgh: config error: {exc}")

    def download_slice(wildcards):
        """What one downloaded dataset depends on: its sources and the clip re-encoding, not politeness knobs."""
        download = CFG.to_dict()["data"]["download"]
        return json.dumps({"sources": download[wildcards.dataset], "reencode": download["reencode"]}, sort_keys=True)

    rule download:
        output:
            f"{DATA}/{{dataset}}/.complete",
        params:
            slice=download_slice,
        log:
            f"{RESULTS}/logs/download/{{dataset}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/download/{{dataset}}.tsv"
        threads: min(4, CFG.data.download.workers)  # cutting/re-encoding clips; fetching mostly waits on the network
        resources:
            mem_mb=8000,  # AudioSet's 2M-row clip list
        run:
            shell_args = cmgh_cmd("data", "download", "--dataset", wildcards.dataset)
            run_logged(shell_args, log[0])
