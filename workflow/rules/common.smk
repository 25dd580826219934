# Config loading, validation and the glue the rules share (the snakemake-workflow-template layout:
# each other .smk file is one stage and defines rules only). What to compute comes from cmgh.plan
# (the run grid, the evaluations, the worlds: Snakemake-free and unit-tested), the rerun triggers from
# cmgh.plan.triggers, paths from cmgh.layout, so the rules and the code that writes their files cannot
# disagree. Rules are `shell:` commands: a job costs one interpreter start (the cmgh CLI), not a
# nested Snakemake process first (what a `run:` job costs under the local executor).
import os
import re
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod

from cmgh import config as cmgh_config
from cmgh import layout, worlds
from cmgh.data import datasets
from cmgh.data.datasets import TOKENIZED
from cmgh.errors import ConfigError, DataError
from cmgh.evaluate import NOISE_TRAINING, TASK_DATASETS, TASKS
from cmgh.plan import Plan
from cmgh.plan.triggers import Triggers


# A world's module of a noise study gets, beside its tree's config, what it reads from the study's shared
# tree (cmgh.worlds.SharedSets; the workflow's own channel, not a config key: no command reads it).
SHARED_SETS = config.pop(worlds.SHARED_SETS_KEY, None)
# `--config set=[pretrain.steps=3, ...]`: dotted overrides parsed as `cmgh --set` parses them (Snakemake's own
# `--config key=value` takes no dotted key and reads a nested number as a string).
SETS = config.pop(cmgh_config.SNAKEMAKE_SETS_KEY, None) or []
try:  # first our one-line message naming the key path, before any job starts
    for configfile_path in workflow.configfiles:  # Snakemake's YAML reader lets a repeated key replace the first
        cmgh_config.read_yaml(configfile_path)
    CFG = cmgh_config.from_dict(config, cmgh_config.snakemake_sets(SETS))
    for variant_name in CFG.variants:  # a typo inside a variant's entry: named in one line here, not deep in the planning
        cmgh_config.for_variant(CFG, variant_name)
except ConfigError as exc:
    sys.exit(f"cmgh: config error: {exc}")
# (cmgh.config validates against cmgh/defaults/config.schema.yaml, the schema Snakemake's
# `validate` would read again: once is enough, and ours names the key in one line)

PLAN = Plan(CFG)
TRIGGERS = Triggers(PLAN)
# config/ablation.yaml, config/study.yaml: the whole DAG once per generated world (worlds.smk), each tree a module of this Snakefile.
WORLDS = PLAN.worlds

# With a default storage provider (workflow/profiles/s3, kubernetes) Snakemake maps every declared
# path to an object under the prefix and gives a job local copies under its local storage prefix.
# The rules then declare the config's paths as written (relative ones, the documented choice, are
# keys relative to the working directory; absolute ones would carry the submitting host's path into
# every key), and the jobs' config names the local copies, so the CLI reads and writes what Snakemake moves.
STORAGE = workflow.storage_settings.default_storage_provider is not None
PATH_ROOTS = ("data", "features", "results")


def storage_local(path):
    """Where Snakemake keeps the local copy of ``path``'s object (an absolute path)."""
    return os.path.abspath(workflow.modifier.path_modifier.apply_default_storage(path))


if STORAGE:
    DATA, FEATURES, RESULTS = (os.path.normpath(str(CFG.to_dict()["paths"][name])) for name in PATH_ROOTS)
    JOB_CFG = cmgh_config.with_overrides(CFG, [f"paths.{name}={storage_local(root)}" for name, root in zip(PATH_ROOTS, (DATA, FEATURES, RESULTS))])
else:
    DATA, FEATURES, RESULTS = (str(CFG.path(name)) for name in PATH_ROOTS)
    JOB_CFG = CFG
# Jobs run the interpreter that runs Snakemake (`make setup`'s .venv), or, with
# `--software-deployment-method conda`, the `python` of the environment Snakemake activates for
# them (workflow/envs/cmgh.yaml, every rule's `conda:`).
USE_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
PYTHON = "python" if USE_CONDA else sys.executable
CMGH = [PYTHON, "-m", "cmgh.cli"]  # the cmgh CLI as a command prefix (a rule's params, quoted with :q)
CONDA_ENV = "../envs/cmgh.yaml"  # relative to the rule files

# wildcard constraints, from the one list of each kind of name
BACKBONE_PATTERN = "|".join(re.escape(b) for b in cmgh_config.choices("model.backbones"))
VARIANT_PATTERN = "|".join(re.escape(v) for v in CFG.variants)
TASK_PATTERN = "|".join(re.escape(t) for t in TASKS)
DATASET_PATTERN = "|".join(re.escape(d) for d in cmgh_config.choices("data.datasets"))
STUDY_PATTERN = r"[A-Za-z0-9_.-]+"


def write_if_changed(path, text):
    """Write ``text`` unless the file already holds it: a file read by rules whose timestamp
    must never trigger reruns (their `params` slices do that)."""
    try:
        if Path(path).read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    from cmgh.io import atomic_write_text

    atomic_write_text(path, text)


# Every rule's command reads the resolved config from this one file (not in the worlds' root:
# each tree writes its own). It is the jobs' input, so it keeps store URIs as given (passwords too);
# every config written beside a result masks them.
RESOLVED_CONFIG = str(layout.resolved_config(RESULTS))
if not WORLDS:
    write_if_changed(RESOLVED_CONFIG, JOB_CFG.to_yaml(masked=False))


# A world of a noise study reads the datasets every world shares (raw, and decoded where its vocabulary
# plays no part) from the shared tree, which the shared module's jobs write; its own tree links each
# such folder there, so its jobs' config paths reach them (cmgh.worlds.link_shared).
SHARED = worlds.SharedSets.from_dict(SHARED_SETS) if SHARED_SETS else worlds.SharedSets(Path())
if SHARED:
    try:
        worlds.link_shared(SHARED.links(Path(DATA), Path(FEATURES)))
    except DataError as exc:
        sys.exit(f"cmgh: {exc}")


def data_root(dataset):
    """Where ``dataset``'s raw files are: the shared tree's for a dataset every world shares."""
    return SHARED.data_root if dataset in SHARED.data else DATA


def features_root(dataset):
    """Where ``dataset``'s decoded features are: the shared tree's for a feature set every world shares."""
    return SHARED.features_root if dataset in SHARED.features else FEATURES


# --------------------------------------------------------------------------- paths (patterns)


def p(path):
    """A cmgh.layout path as the string Snakemake wants (wildcards such as ``{dataset}`` stay)."""
    return str(path)


def job_log(step, name):
    return p(layout.job_log(RESULTS, step, name))


def job_benchmark(step, name):
    return p(layout.job_benchmark(RESULTS, step, name))


def run_file(name, backbone="{backbone}", variant="{variant}", seed="{seed}"):
    """A file of one pre-training run (the rule's pattern with the default wildcards)."""
    return p(layout.run_dir(RESULTS, backbone, variant, seed) / name)


def stored(path):
    """A rule's output as declared: with object storage a folder is one `directory()` output, so
    every file in it moves to the store and to the jobs that read it (an index alone would leave
    the shards and clips behind on the machine that wrote them)."""
    return directory(path) if STORAGE else path


def feature_index(dataset):
    """The extract rule's output: its index, written last (with object storage: the whole folder)."""
    return p(layout.feature_dir(FEATURES, dataset) if STORAGE else layout.feature_index(features_root(dataset), dataset))


def packed_index(dataset):
    """The pack rule's output: its index, written last (with object storage: the whole folder)."""
    return p(layout.packed_dir(FEATURES, dataset) if STORAGE else layout.packed_index(FEATURES, dataset))


def corpus_index(name, fmt):
    """A pre-training corpus's features: the pack rule's or the extract rule's output."""
    return packed_index(name) if fmt == "packed" else feature_index(name)


def corpus_indexes(variant=None):
    """The features a pre-training run of ``variant`` (the base config's without one) reads: each corpus of
    `pretrain.corpora`, packed or decoded as `features.format` says."""
    return [corpus_index(name, fmt) for name, fmt in PLAN.corpora(variant)]


def stamp(dataset):
    """The data rule's output: the `.complete` stamp (with object storage: the dataset's folder)."""
    return p(layout.dataset_dir(DATA, dataset) if STORAGE else layout.stamp(data_root(dataset), dataset))


def raw_inputs(dataset, files, media=False):
    """Raw files of ``dataset`` that a job reads, as its inputs, with the dataset's `.complete` stamp.

    The data job (rule synth or download, a checkpoint) writes a dataset's annotation files and
    then the stamp, its declared output: the files' names differ per dataset, so they cannot be
    output patterns of one `{dataset}` rule. Until that job has run, the checkpoint stands in
    (Snakemake waits on the stamp and asks again afterwards); then the files themselves are
    inputs, so a missing one is named at planning and a rewritten one reruns its readers.
    With object storage the stamp is the dataset's folder, retrieved whole only by a job that
    reads its media (``media``); the others fetch just their files. A dataset of the shared tree is
    written by the shared module's checkpoint: its stamp (rewritten last by every run) stands for its files.
    """
    if dataset in SHARED.data:
        return [stamp(dataset)]
    data_rule = checkpoints.synth if CFG.data.source == "synth" else checkpoints.download
    data_rule.get(dataset=dataset)  # raises (wait on the stamp) until the dataset exists
    return [p(f) for f in files] + ([stamp(dataset)] if media or not STORAGE else [])


def task_inputs(wildcards, task=None):
    """What one evaluation reads of its own tree: its features and the raw files of its task (AudioSet's
    class list, the generator's noise ground truth), those of the shared tree left to `shared_inputs`;
    ``task`` defaults to the job's wildcard."""
    task = task or wildcards.task
    dataset = TASK_DATASETS[task]
    features = [] if dataset in SHARED.features else [feature_index(dataset)]
    raw = [] if dataset in SHARED.data else raw_inputs(dataset, layout.task_raw_inputs(DATA, task))
    return {"features": features, "raw": raw}


def shared_inputs(wildcards):
    """What one evaluation job of a world reads from the shared tree: a named input of its own, which
    waits on no checkpoint of the world's (one that does holds back every path of its function), so
    a dry run plans the shared jobs once for every world."""
    tasks = PLAN.planned_tasks if PLAN.per_run else (wildcards.task,)
    datasets_read = {TASK_DATASETS[task] for task in tasks}
    return sorted({stamp(d) for d in datasets_read & set(SHARED.data)} | {feature_index(d) for d in datasets_read & set(SHARED.features)})


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


def pretrain_gpus(wildcards):
    """GPUs of one pre-training job: the variant's `pretrain.gpus`."""
    return int(PLAN.variant_config(wildcards.variant).pretrain.gpus)


def pretrain_launcher(wildcards, resources):
    """The cmgh CLI prefix of a pre-training job: under torchrun, one process per GPU, when it has
    more than one (`resources.gpu`, e.g. from a cluster profile's set-resources)."""
    gpus = int(resources.gpu)
    if gpus <= 1:
        return CMGH
    return [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus), "-m", "cmgh"]


def pretrain_threads(wildcards, threads, resources):
    """Torch threads per process: the job's cores shared by its processes."""
    return max(1, threads // max(1, int(resources.gpu)))


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


# --------------------------------------------------------------------------- targets


def pretrain_targets():
    return [run_file(layout.SUMMARY, b, v, s) for b, v, s in PLAN.run_grid()]


def evaluation_targets():
    return [p(layout.eval_metrics(RESULTS, t, b, v, s)) for t, b, v, s in PLAN.evaluations()]


def run_evaluation_targets():
    """The evaluations of the runs' own records: noise detection over training of every run with a labelled corpus."""
    return [p(layout.eval_metrics(RESULTS, NOISE_TRAINING, b, v, s)) for b, v, s in PLAN.run_evaluations()]


def report_table(name, suffix, caption=None):
    """A table of the report as its rule declares it; with a caption, shown in `snakemake --report`."""
    path = p(layout.table(RESULTS, name, suffix))
    return report(path, caption=caption, category="Tables") if caption else path


def report_figure(name, caption):
    return report(p(layout.figure(RESULTS, name)), caption=caption, category="Figures")


# The report's noise-detection ROC exists only where the noise evaluation runs (generated ground truth).
NOISE_FIGURES = {"roc": report_figure(layout.NOISE_ROC_FIGURE, "../report/noise_roc.rst")} if "noise" in PLAN.planned_tasks else {}
# Noise detection over training: one figure per backbone and variant whose runs have a job.
NOISE_TRAINING_CAPTION = "../report/noise_over_training.rst"
NOISE_TRAINING_FIGURES = {
    f"noise_training_{i}": report(p(layout.noise_training_figure(RESULTS, b, v)), caption=NOISE_TRAINING_CAPTION, category="Figures")
    for i, (b, v) in enumerate(PLAN.noise_training_figures())
}
SCALING_OUTPUTS = {
    "scaling": report_table(layout.SCALING_TABLE, "md", "../report/scaling.rst"),
    "scaling_csv": report_table(layout.SCALING_TABLE, "csv"),
    "scaling_figure": report_figure(layout.SCALING_FIGURE, "../report/scaling_gain.rst"),
} if PLAN.scaling_pairs else {}


def feature_targets():
    """Decoded features of every evaluated dataset, and the corpora of every variant's pre-training."""
    corpora = {path for v in PLAN.variants for path in corpus_indexes(v)}
    return sorted({feature_index(name) for name in PLAN.decoded_datasets()} | corpora)


def all_targets():
    if WORLDS:
        return [p(layout.table(worlds_root(), layout.NOISE_GAIN, "csv")), p(worlds_root() / layout.STUDY_PAGE)]  # worlds_root: worlds_common.smk
    targets = feature_targets() + pretrain_targets() + [report_table(layout.ABLATION_TABLE, "md")]
    if PLAN.scaling_pairs:
        targets.append(p(layout.scaling_table(RESULTS, "md")))
    if CFG.sweep.run:
        targets.append(p(layout.study_dir(RESULTS, CFG.sweep.study) / layout.BEST_PARAMS))
    return targets
