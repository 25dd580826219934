# Raw datasets in their real layouts: generated (mini) or downloaded (paper scale).


rule synth:
    output:
        f"{DATA}/{{dataset}}/.complete",
    params:
        slice=cfg_slice("data"),
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
