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
