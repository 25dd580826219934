# Optuna studies over the harmonization and curriculum hyperparameters (cmgh sweep).
# `sweep.workers` jobs (rule sweep_worker) work on one study at once, each running its share of
# `sweep.n_trials`; the rule `sweep` then tops the study up to n_trials and writes its outputs.

SWEEP_PLOTS = ("optimization_history", "param_importances", "parallel_coordinate")
SWEEP_TASK = {"kinetics_val_top1": "kinetics", "audioset_val_mAP": "audioset"}[CFG.sweep.objective]


def sweep_slice():
    """What a study depends on: its settings, the validation protocol and what its base variant's runs
    compute (another variant's knob, another seed or the GPU count does not rerun it)."""
    tree = CFG.to_dict()
    base = CFG.sweep.base_variant
    inputs = cmgh_config.training_inputs(cmgh_config.for_variant(CFG, base)) if base in tree["variants"] else None
    return json.dumps({"sweep": tree["sweep"], "evaluate": tree["evaluate"], "base_variant": inputs}, sort_keys=True)


def sweep_inputs(wildcards):
    inputs = [f"{FEATURES}/howto100m/index.parquet", f"{FEATURES}/{SWEEP_TASK}/index.parquet", f"{FEATURES}/vocab.json"]
    workers = int(CFG.sweep.workers)
    if workers > 1:
        inputs += [f"{RESULTS}/sweep/{wildcards.study}/workers/worker{w}.done" for w in range(workers)]
    return inputs


rule sweep_worker:
    input:
        f"{FEATURES}/howto100m/index.parquet",
        f"{FEATURES}/{SWEEP_TASK}/index.parquet",
        f"{FEATURES}/vocab.json",
    output:
        touch(f"{RESULTS}/sweep/{{study}}/workers/worker{{worker}}.done"),
    params:
        slice=sweep_slice(),
        share=max(1, int(CFG.sweep.n_trials) // int(CFG.sweep.workers)),
    log:
        f"{RESULTS}/logs/sweep/{{study}}/worker{{worker}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/sweep/{{study}}/worker{{worker}}.tsv"
    wildcard_constraints:
        study=r"[A-Za-z0-9_.-]+",
        worker=r"\d+",
    threads: 1
    priority: 1
    resources:
        mem_mb=4000,
    run:
        run_logged(
            cmgh_cmd("sweep", "--study", wildcards.study, "--worker-trials", str(params.share), "--threads", str(threads)),
            log[0],
            rule="sweep_worker",
        )


rule sweep:
    input:
        sweep_inputs,
    output:
        best=f"{RESULTS}/sweep/{{study}}/best_params.yaml",
        tuned=f"{RESULTS}/sweep/{{study}}/tuned_variant.yaml",
        trials=f"{RESULTS}/sweep/{{study}}/trials.csv",
        plots=[report(f"{RESULTS}/sweep/{{study}}/{plot}.png", caption="../report/sweep.rst", category="Sweep") for plot in SWEEP_PLOTS],
    params:
        slice=sweep_slice(),
    log:
        f"{RESULTS}/logs/sweep/{{study}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/sweep/{{study}}.tsv"
    wildcard_constraints:
        study=r"[A-Za-z0-9_.-]+",
    threads: 1
    priority: 1
    resources:
        mem_mb=4000,
    run:
        run_logged(
            cmgh_cmd("sweep", "--study", wildcards.study, "--n-trials", str(CFG.sweep.n_trials), "--threads", str(threads)),
            log[0],
            rule="sweep",
        )
