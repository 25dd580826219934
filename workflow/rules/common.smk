# Config loading, validation and every helper the rules share (the snakemake-workflow-template
# layout: each other .smk file is one stage and defines rules only). Paths come from cmgh.layout,
# names from the config schema and cmgh.evaluate, so a rule and the code that writes its files
# cannot disagree. Rules are `shell:` commands: a job costs one interpreter start (the cmgh CLI),
# not a nested Snakemake process first (what a `run:` job costs under the local executor).
import functools
import json
import os
import re
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod

from cmgh import ablation as noise_ablation
from cmgh import config as cmgh_config
from cmgh import keypaths, layout
from cmgh.data import datasets
from cmgh.data.datasets import NOISE_TRUTH, TOKENIZED
from cmgh.errors import ConfigError
from cmgh.evaluate import NOISE_TRAINING, RUN_TASKS, TASK_DATASETS, TASKS, VALIDATION_METRICS, planned_tasks


try:  # first our one-line message naming the key path, before any job starts
    CFG = cmgh_config.from_dict(config)
except ConfigError as exc:
    sys.exit(f"cmgh: config error: {exc}")
# (cmgh.config validates against workflow/schemas/config.schema.yaml, the schema Snakemake's
# `validate` would read again: once is enough, and ours names the key in one line)

# config/ablation.yaml, config/study.yaml: the whole DAG once per noise setting (ablation.smk), each tree a module of this Snakefile.
NOISE_SETTINGS = noise_ablation.settings(CFG.ablation.noise_rates, CFG.ablation.modalities)

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
DATASETS = list(CFG.data.datasets)
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
PLANNED_TASKS = planned_tasks(CFG.data.source, TASKS, CFG.evaluate.tasks)
PLANNED_RUN_TASKS = planned_tasks(CFG.data.source, RUN_TASKS, CFG.evaluate.tasks)
TASK_PATTERN = "|".join(re.escape(t) for t in TASKS)
DATASET_PATTERN = "|".join(re.escape(d) for d in cmgh_config.choices("data.datasets"))
STUDY_PATTERN = r"[A-Za-z0-9_.-]+"
# The random-init floor reuses a trained run's folder only for its config and seed.
REFERENCE_VARIANT = "baseline" if "baseline" in CFG.variants else next(iter(CFG.variants))


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


# Every rule's command reads the resolved config from this one file (not in the ablation's root:
# each tree writes its own). It is the jobs' input, so it keeps store URIs as given (passwords too);
# every config written beside a result masks them.
RESOLVED_CONFIG = str(layout.resolved_config(RESULTS))
if not NOISE_SETTINGS:
    write_if_changed(RESOLVED_CONFIG, JOB_CFG.to_yaml(masked=False))


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
    return p(layout.feature_dir(FEATURES, dataset) if STORAGE else layout.feature_index(FEATURES, dataset))


def packed_index(dataset):
    """The pack rule's output: its index, written last (with object storage: the whole folder)."""
    return p(layout.packed_dir(FEATURES, dataset) if STORAGE else layout.packed_index(FEATURES, dataset))


def corpus_indexes(cfg):
    """The features a pre-training run of ``cfg`` (a variant's config) reads: each corpus of
    `pretrain.corpora`, packed or decoded as `features.format` says."""
    tree = cfg.to_dict()
    names = [name for name, _ in cmgh_config.corpora(tree["pretrain"])]
    return [packed_index(name) if cmgh_config.corpus_format(tree, name) == "packed" else feature_index(name) for name in names]


def stamp(dataset):
    """The data rule's output: the `.complete` stamp (with object storage: the dataset's folder)."""
    return p(layout.dataset_dir(DATA, dataset) if STORAGE else layout.stamp(DATA, dataset))


def raw_inputs(dataset, files, media=False):
    """Raw files of ``dataset`` that a job reads, as its inputs, with the dataset's `.complete` stamp.

    The data job (rule synth or download, a checkpoint) writes a dataset's annotation files and
    then the stamp, its declared output: the files' names differ per dataset, so they cannot be
    output patterns of one `{dataset}` rule. Until that job has run, the checkpoint stands in
    (Snakemake waits on the stamp and asks again afterwards); then the files themselves are
    inputs, so a missing one is named at planning and a rewritten one reruns its readers.
    With object storage the stamp is the dataset's folder, retrieved whole only by a job that
    reads its media (``media``); the others fetch just their files.
    """
    data_rule = checkpoints.synth if CFG.data.source == "synth" else checkpoints.download
    data_rule.get(dataset=dataset)  # raises (wait on the stamp) until the dataset exists
    return [p(f) for f in files] + ([stamp(dataset)] if media or not STORAGE else [])


def task_inputs(wildcards, task=None):
    """What one evaluation reads: its features and the raw files of its task (AudioSet's class
    list, the generator's noise ground truth); ``task`` defaults to the job's wildcard."""
    task = task or wildcards.task
    dataset = TASK_DATASETS[task]
    return {"features": feature_index(dataset), "raw": raw_inputs(dataset, layout.task_raw_inputs(DATA, task))}


# --------------------------------------------------------------------------- rerun triggers
# A rule's `params.slice`: the config it depends on, so a changed value reruns exactly its jobs.


@functools.cache
def cfg_slice(*keys):
    """A JSON string of config sections or dotted keys (``features.video.fps``)."""
    tree = CFG.to_dict()
    return json.dumps({k: keypaths.get_path(tree, k) for k in keys}, sort_keys=True)


def encoder_evaluation(tree):
    """The `evaluate` section as the encoder evaluations and the sweep's validation read it: without
    the keys of the run tasks (`evaluate.noise_training`), which only their own jobs read."""
    return {k: v for k, v in tree["evaluate"].items() if k not in (*RUN_TASKS, "tasks", "jobs", "random_init")}  # which evaluations run, in how many jobs: no result


@functools.cache
def evaluation_slice(*keys):
    """:func:`cfg_slice` of ``keys`` and the encoder evaluations' `evaluate` section."""
    tree = CFG.to_dict()
    return json.dumps({**{k: keypaths.get_path(tree, k) for k in keys}, "evaluate": encoder_evaluation(tree)}, sort_keys=True)


@functools.cache
def variant_config(variant):
    """A variant's resolved config, resolved once per parse: every job of the variant asks for it
    (the rerun trigger, the GPU count), and a dry run evaluates every job's params."""
    return cmgh_config.for_variant(CFG, variant)


@functools.cache
def variant_slice(variant):
    """What a variant's runs compute (cmgh.config.training_inputs) plus what they write besides the
    model (the score dumps): a changed knob reruns only its branch; another seed or the GPU count none."""
    run_cfg = variant_config(variant)
    keys = {**cmgh_config.training_inputs(run_cfg), "score_every": run_cfg.pretrain.score_every}
    return json.dumps(keys, sort_keys=True)


def synth_slice(wildcards):
    """What one generated dataset depends on: a knob of another dataset does not rerun it."""
    synth = CFG.to_dict()["data"]["synth"]
    keys = {k: synth[k] for k in ("seed", "concepts", "media")}
    keys[wildcards.dataset] = synth.get(wildcards.dataset, {})
    for section in datasets.get(wildcards.dataset).synth_sections:
        keys[section] = CFG.to_dict()["data"][section]
    return json.dumps(keys, sort_keys=True)


def download_slice(wildcards):
    """What one downloaded dataset depends on: its sources and the clip re-encoding, not politeness knobs."""
    download = CFG.to_dict()["data"]["download"]
    return json.dumps({"sources": download[wildcards.dataset], "reencode": download["reencode"]}, sort_keys=True)


def sweep_slice():
    """What a study depends on: its settings, the validation protocol and what its base variant's runs
    compute (another variant's knob, another seed or the GPU count does not rerun it)."""
    tree = CFG.to_dict()
    base = CFG.sweep.base_variant
    inputs = cmgh_config.training_inputs(variant_config(base)) if base in tree["variants"] else None
    return json.dumps({"sweep": tree["sweep"], "evaluate": encoder_evaluation(tree), "base_variant": inputs}, sort_keys=True)


# --------------------------------------------------------------------------- per-stage inputs and commands


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


@functools.cache
def truth_corpora(variant):
    """The corpora of a variant's pre-training that carry a generated ground truth (cmgh.data.datasets.NOISE_TRUTH):
    each of its runs gets a noise-over-training job when there is one (none on downloaded data)."""
    if NOISE_TRAINING not in PLANNED_RUN_TASKS:
        return ()
    return tuple(name for name, _ in cmgh_config.corpora(variant_config(variant).to_dict()["pretrain"]) if name in NOISE_TRUTH)


def noise_training_inputs(wildcards):
    """What noise detection over one run's training reads besides the finished run (its summary,
    written after its score dumps): each labelled corpus's features as the run read them, and its ground truth."""
    names = truth_corpora(wildcards.variant)
    tree = variant_config(wildcards.variant).to_dict()
    features = [packed_index(name) if cmgh_config.corpus_format(tree, name) == "packed" else feature_index(name) for name in names]
    return {"features": features, "raw": [path for name in names for path in raw_inputs(name, [layout.noise_labels(DATA, name)])]}


# `evaluate.jobs: per_run`: one job per run evaluates every planned encoder task, and noise detection
# over training too when every variant has a labelled corpus (a rule's outputs cannot depend on the variant).
NOISE_TRAINING_IN_RUN_JOB = CFG.evaluate.jobs == "per_run" and NOISE_TRAINING in PLANNED_RUN_TASKS and all(truth_corpora(v) for v in CFG.variants)
RUN_JOB_TASKS = (*PLANNED_TASKS, *((NOISE_TRAINING,) if NOISE_TRAINING_IN_RUN_JOB else ()))
RUN_JOB_OUTPUTS = [p(layout.eval_metrics(RESULTS, t, "{backbone}", "{variant}", "{seed}")) for t in RUN_JOB_TASKS] + (
    [p(layout.eval_dir(RESULTS, NOISE_TRAINING, "{backbone}", "{variant}", "{seed}") / layout.NOISE_WINDOWS)] if NOISE_TRAINING_IN_RUN_JOB else []
)


def task_arguments(tasks):
    """``--task`` options of the cmgh CLI, one per task (a list param, each item quoted by `:q`)."""
    return [arg for task in tasks for arg in ("--task", task)]


def run_evaluation_inputs(wildcards):
    """What one run's evaluations read together (`evaluate.jobs: per_run`): every task's features and raw files."""
    features, raw = [], []
    for task in PLANNED_TASKS:
        inputs = task_inputs(wildcards, task)
        features.append(inputs["features"])
        raw += inputs["raw"]
    if NOISE_TRAINING_IN_RUN_JOB and wildcards.get("variant", layout.RANDOM_VARIANT) != layout.RANDOM_VARIANT:
        inputs = noise_training_inputs(wildcards)
        features += inputs["features"]
        raw += inputs["raw"]
    return {"features": sorted(set(features)), "raw": sorted(set(raw))}


def pretrain_inputs(wildcards):
    return corpus_indexes(variant_config(wildcards.variant)) + [p(layout.vocab(FEATURES))]


def pretrain_gpus(wildcards):
    """GPUs of one pre-training job: the variant's `pretrain.gpus`."""
    return int(variant_config(wildcards.variant).pretrain.gpus)


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


SWEEP_TASK = VALIDATION_METRICS[CFG.sweep.objective][0]


def vocab_inputs(wildcards):
    """The pre-training captions the vocabulary is built from."""
    (spec,) = [spec for spec in datasets.specs() if spec.vocabulary is not None]  # HowTo100M
    return raw_inputs(spec.name, spec.annotation_files(DATA))


def sweep_features():
    """What a sweep trial reads: the pre-training corpus and the validation task's features."""
    return [*corpus_indexes(CFG), feature_index(TASK_DATASETS[SWEEP_TASK]), p(layout.vocab(FEATURES))]


def sweep_inputs(wildcards):
    inputs = sweep_features()
    workers = int(CFG.sweep.workers)
    if workers > 1:
        inputs += [p(layout.study_dir(RESULTS, wildcards.study) / "workers" / f"worker{w}.done") for w in range(workers)]
    return inputs


# --------------------------------------------------------------------------- targets


def run_grid():
    """(backbone, variant, seed) of every pre-training run the config asks for."""
    return [(b, v, s) for b in CFG.model.backbones for v in CFG.variants for s in CFG.pretrain.seeds]


def pretrain_targets():
    return [run_file(layout.SUMMARY, b, v, s) for b, v, s in run_grid()]


def evaluation_targets():
    runs = run_grid() + ([(b, layout.RANDOM_VARIANT, s) for b in CFG.model.backbones for s in CFG.pretrain.seeds] if CFG.evaluate.random_init else [])
    return [p(layout.eval_metrics(RESULTS, t, b, v, s)) for t in PLANNED_TASKS for b, v, s in runs]


def run_evaluation_targets():
    """The evaluations of the runs' own records: noise detection over training of every run with a labelled corpus."""
    return [p(layout.eval_metrics(RESULTS, NOISE_TRAINING, b, v, s)) for b, v, s in run_grid() if truth_corpora(v)]


# The report's noise-detection ROC exists only where the noise evaluation runs (generated ground truth).
NOISE_FIGURES = {"roc": report(f"{RESULTS}/figures/noise_roc.png", caption="../report/noise_roc.rst", category="Figures")} if "noise" in PLANNED_TASKS else {}
# Noise detection over training: one figure per backbone and variant whose runs have a job.
NOISE_TRAINING_CAPTION = "../report/noise_over_training.rst"
NOISE_TRAINING_FIGURES = {
    f"noise_training_{i}": report(p(layout.noise_training_figure(RESULTS, b, v)), caption=NOISE_TRAINING_CAPTION, category="Figures")
    for i, (b, v) in enumerate((b, v) for b in CFG.model.backbones for v in CFG.variants if truth_corpora(v))
}


@functools.cache
def scaling_pairs():
    """Variants that differ only by YouTube-8M added to `pretrain.corpora` (config/scaling.yaml), paired
    as the report pairs them (cmgh.report.scaling.pairs); with any, the report writes the gain from adding it."""
    from cmgh.report.scaling import pairs

    return pairs({v: variant_config(v).to_dict() for v in CFG.variants})


SCALING_OUTPUTS = {
    "scaling": report(p(layout.scaling_table(RESULTS, "md")), caption="../report/scaling.rst", category="Tables"),
    "scaling_csv": p(layout.scaling_table(RESULTS, "csv")),
    "scaling_figure": report(p(layout.scaling_figure(RESULTS)), caption="../report/scaling_gain.rst", category="Figures"),
} if scaling_pairs() else {}


def feature_targets():
    """Decoded features of every evaluated dataset, and the corpora of every variant's pre-training."""
    decoded = {TASK_DATASETS[t] for t in PLANNED_TASKS} & set(DATASETS)
    corpora = {path for v in CFG.variants for path in corpus_indexes(variant_config(v))}
    return sorted({feature_index(name) for name in decoded} | corpora)


# --------------------------------------------------------------------------- the noise-rate ablation


def ablation_root():
    return cmgh_config.resolve_path(CFG.ablation.root)


def noise_tree(setting):
    """Results tree of one noise setting (``noise0.3``, ``text0.2``): its own data, features and results."""
    return ablation_root() / setting.name


def tree_config(modality, rate):
    """The full config of one tree: the ablation config at this noise setting, with its own paths."""
    setting = noise_ablation.NoiseSetting(modality, float(rate))
    tree = CFG.to_dict()
    tree["ablation"]["noise_rates"] = []
    tree["data"]["noise"].update(audio_rate=setting.audio_rate, text_rate=setting.text_rate)
    base = noise_tree(setting)
    tree["paths"] = {"data": str(base / "data"), "features": str(base / "features"), "results": str(base)}
    if not tree["tracking"]["uri"]:  # one store for all trees: the MLflow UI compares across rates
        tree["tracking"]["uri"] = f"sqlite:///{ablation_root() / 'mlflow.db'}"
        tree["tracking"]["artifacts"] = tree["tracking"]["artifacts"] or str(ablation_root() / "mlruns")
    return tree


def tree_module(setting):
    """A noise setting's module name, also its rules' prefix (``noise0_3``: ``noise0_3_pretrain``)."""
    return setting.name.replace(".", "_").replace("-", "_")


def tree_modules_file():
    """A Snakefile of one `module` + `use rule` statement pair per noise setting (Snakemake's documented
    DSL wants each module's name literally; the settings come from the config, so the statements are
    written here, from validated floats and the schema's modality names only, and included by ablation.smk)."""
    path = ablation_root() / "config" / "modules.smk"
    snakefile = os.path.relpath(Path(workflow.basedir) / "Snakefile", path.parent)  # resolved from this file's folder
    lines = ["# Written by workflow/rules/common.smk (tree_modules_file) from ablation.noise_rates and modalities; do not edit.", ""]
    for setting in NOISE_SETTINGS:
        name = tree_module(setting)
        lines += [f"module {name}:", f"    snakefile: {snakefile!r}", f"    config: tree_config({setting.modality!r}, {setting.rate!r})", "",
                  "", f"use rule * from {name} as {name}_*", "", ""]
    write_if_changed(path, "\n".join(lines).rstrip() + "\n")
    return str(path)


def all_targets():
    if NOISE_SETTINGS:
        return [p(layout.tables_dir(ablation_root()) / "noise_gain.csv"), p(ablation_root() / layout.STUDY_PAGE)]
    targets = feature_targets() + pretrain_targets() + [p(layout.tables_dir(RESULTS) / "ablation.md")]
    if scaling_pairs():
        targets.append(p(layout.scaling_table(RESULTS, "md")))
    if CFG.sweep.run:
        targets.append(p(layout.study_dir(RESULTS, CFG.sweep.study) / layout.BEST_PARAMS))
    return targets
