# The per-stage input functions and command builders the rules share (functions only, included by
# common.smk, which defines the paths, the plan and the triggers they read).

# --------------------------------------------------------------------------- per-stage inputs and commands
# A rule's `params.slice` (its rerun trigger) is TRIGGERS' (cmgh.plan.triggers, from cmgh.identity):
# what its jobs' outputs depend on, so a changed value reruns exactly its jobs.


def extract_inputs(wildcards):
    """A dataset's annotation files (its media are listed in them), plus the vocabulary where its
    captions are tokenized (HowTo100M's, shared by every dataset with text)."""
    inputs = raw_inputs(wildcards.dataset, datasets.get(wildcards.dataset).annotation_files(DATA), media=True)
    if wildcards.dataset in TOKENIZED:
        inputs.append(p(layout.vocab(FEATURES)))
    return inputs


def pack_inputs(wildcards):
    """The annotation files a packed corpus is built from (AudioSet: its training segment lists
    that exist: the unbalanced list only where it was downloaded)."""
    files, required = datasets.get(wildcards.dataset).pack_files(DATA)
    inputs = raw_inputs(wildcards.dataset, required, media=True)  # waits for the data job: then the optional files are there or not
    return inputs + [p(f) for f in files if f not in required and f.exists()]


def noise_training_inputs(wildcards):
    """What noise detection over one run's training reads besides the finished run (its summary,
    written after its score dumps): each labelled corpus's features as the run read them, and its ground truth."""
    names = PLAN.truth_corpora(wildcards.variant)
    features = [corpus_index(name, fmt) for name, fmt in PLAN.corpora(wildcards.variant) if name in names]
    return {"features": features, "raw": [path for name in names for path in raw_inputs(name, [layout.noise_labels(DATA, name)])]}


def evaluation_outputs(random_init):
    """The metrics one evaluation job writes: its task's (per task), or every task's of its run (per run,
    with noise detection over training's windows where the run's job scores its training too)."""
    variant = layout.RANDOM_VARIANT if random_init else "{variant}"
    if not PLAN.per_run:
        return [p(layout.eval_metrics(RESULTS, "{task}", "{backbone}", variant, "{seed}"))]
    outputs = [p(layout.eval_metrics(RESULTS, t, "{backbone}", variant, "{seed}")) for t in PLAN.evaluation_tasks(random_init)]
    if NOISE_TRAINING in PLAN.evaluation_tasks(random_init):
        outputs.append(p(layout.eval_dir(RESULTS, NOISE_TRAINING, "{backbone}", "{variant}", "{seed}") / layout.NOISE_WINDOWS))
    return outputs


def evaluation_inputs(wildcards):
    """What one evaluation job reads: its task's features and raw files (per task), or every task's of
    its run (per run: with its labelled corpora where the job scores its training too)."""
    if not PLAN.per_run:
        return task_inputs(wildcards)
    random_init = wildcards.get("variant", layout.RANDOM_VARIANT) == layout.RANDOM_VARIANT
    features, raw = [], []
    for task in PLAN.planned_tasks:
        inputs = task_inputs(wildcards, task)
        features += inputs["features"]
        raw += inputs["raw"]
    if NOISE_TRAINING in PLAN.evaluation_tasks(random_init):
        inputs = noise_training_inputs(wildcards)
        features += inputs["features"]
        raw += inputs["raw"]
    return {"features": sorted(set(features)), "raw": sorted(set(raw))}


def evaluation_params(random_init):
    """An evaluation job's params: per run, its ``--task`` options (one per task, each quoted by `:q`);
    per task, its output folder. The rerun trigger: the evaluated run's training (not for a random
    encoder: its model and features) and the evaluations' settings."""
    params = {"cmgh": CMGH, "config": RESOLVED_CONFIG}
    if PLAN.per_run:
        params["tasks"] = [arg for task in PLAN.evaluation_tasks(random_init) for arg in ("--task", task)]
    params["slice"] = TRIGGERS.evaluate_random_init() if random_init else lambda wildcards: TRIGGERS.evaluate(wildcards.variant)
    params["checkpoint"] = lambda wildcards, input: str(Path(input.summary).parent)
    if not PLAN.per_run:
        params["out"] = lambda wildcards, output: str(Path(output[0]).parent)
    return params


def evaluation_command(name, random_init):
    """An evaluation job's command: one task (``--task {wildcards.task}``, ``--out``) or its run's
    (``{params.tasks}``); the same text as each mode's jobs recorded (Snakemake reruns a job whose command text changed)."""
    tasks = "{params.tasks:q}" if PLAN.per_run else "--task {wildcards.task:q}"
    out = "" if PLAN.per_run else " --out {params.out:q}"
    return (f"CMGH_RULE={name} {{params.cmgh:q}} evaluate {tasks} --checkpoint {{params.checkpoint:q}}"
            f"{out}{' --random-init' if random_init else ''} --threads {{threads:q}} --config {{params.config:q}} >> {{log:q}} 2>&1")


def evaluation_constraints(random_init):
    """The evaluation job's wildcard constraints (a task only per task, a variant only for a pre-trained run)."""
    return {**({} if PLAN.per_run else {"task": TASK_PATTERN}), "backbone": BACKBONE_PATTERN, **({} if random_init else {"variant": VARIANT_PATTERN})}


def reference_summary(wildcards):
    """A random encoder's evaluation reads a trained run's folder (of the reference variant) for its config and seed only."""
    return run_file(layout.SUMMARY, wildcards.backbone, PLAN.reference_variant, wildcards.seed)


def pretrain_inputs(wildcards):
    return corpus_indexes(wildcards.variant) + [p(layout.vocab(FEATURES))]


def pretrain_resource(name):
    """One resource of a pre-training job's shape (cmgh.plan.launch.resources) from the variant's
    `pretrain.nodes` and `pretrain.gpus` (per node); None leaves it unasked."""

    def value(wildcards):
        pcfg = PLAN.variant_config(wildcards.variant).pretrain
        return pretrain_launch.resources(int(pcfg.nodes), int(pcfg.gpus))[name]

    return value


def pretrain_shape(resources, threads):
    """The job's shape read back from its resources (a profile's set-resources included): the
    command starts what the scheduler grants."""
    try:
        return pretrain_launch.geometry(resources, threads)
    except ConfigError as exc:
        raise WorkflowError(f"cmgh: config error: {exc}") from None


ONE_MACHINE_EXECUTORS = ("local", "kubernetes")  # a job on one machine (one pod): no multi-node launch


onstart:
    # A job over several nodes on an executor that runs each job on one machine is refused before any
    # job runs (not when its turn comes, after days of downloads); dry runs show the plan as it is.
    if workflow.executor_plugin is not None and workflow.executor_plugin.name in ONE_MACHINE_EXECUTORS:
        for job in workflow.dag.needrun_jobs():
            nodes = int(job.resources.get("nodes", 1) or 1)
            if nodes > 1:
                sys.exit(f"cmgh: config error: pretrain.nodes: {nodes} spans the nodes of a SLURM allocation "
                         f"(--profile workflow/profiles/slurm), and the {workflow.executor_plugin.name} executor runs "
                         "each job on one machine; add --config 'set=[pretrain.nodes=1]'")


def pretrain_launcher(wildcards, resources, threads):
    """The cmgh CLI prefix of a pre-training job: the CLI (one process), torchrun with one process per
    GPU (one node), or cmgh.train.launch, which starts one torchrun per node under srun (several nodes)."""
    return pretrain_launch.prefix(PYTHON, pretrain_shape(resources, threads), CMGH)


def pretrain_threads(wildcards, threads, resources):
    """Torch threads per process: a node's cores shared by its processes."""
    return pretrain_launch.threads_per_process(pretrain_shape(resources, threads))


def vocab_inputs(wildcards):
    """The pre-training captions the vocabulary is built from."""
    (spec,) = [spec for spec in datasets.specs() if spec.vocabulary is not None]  # HowTo100M
    return raw_inputs(spec.name, spec.annotation_files(DATA))


def sweep_features():
    """What a sweep trial reads: the pre-training corpus and the validation task's features."""
    return [*corpus_indexes(), feature_index(TASK_DATASETS[PLAN.sweep_task]), p(layout.vocab(FEATURES))]


def sweep_inputs(wildcards):
    workers = [p(layout.study_dir(RESULTS, wildcards.study) / "workers" / f"worker{w}.done") for w in PLAN.sweep_workers()]
    return sweep_features() + workers
