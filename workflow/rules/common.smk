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

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod

from cmgh import config as cmgh_config
from cmgh import layout, worlds
from cmgh.data import datasets
from cmgh.data.datasets import TOKENIZED
from cmgh.errors import ConfigError, DataError
from cmgh.evaluate import NOISE_TRAINING, TASK_DATASETS, TASKS
from cmgh.plan import Plan
from cmgh.plan import launch as pretrain_launch
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
# The rules then declare the config's paths relative to the working directory (`rel`: keys relative to
# it; an absolute path outside it would carry the submitting host's path into every key), and the jobs'
# config names the local copies, so the CLI reads and writes what Snakemake moves.
STORAGE = workflow.storage_settings.default_storage_provider is not None
PATH_ROOTS = ("data", "features", "results")


def storage_local(path):
    """Where Snakemake keeps the local copy of ``path``'s object (an absolute path)."""
    return os.path.abspath(workflow.modifier.path_modifier.apply_default_storage(path))


# Every path a rule declares or passes is relative to the working directory (the project folder
# Snakemake runs in) where it lies inside it: Snakemake keys its record of each output
# (.snakemake/metadata) by the output's path as declared and reruns a job whose params changed, so a
# project moved, renamed or cloned elsewhere keeps its records only when no path names its folder.
# A path outside the project (a shared scratch folder) stays absolute.
WORKDIR = os.getcwd()  # Snakemake changed into `--directory` before reading this file


def rel(path):
    """``path`` (absolute or relative to the working directory) as rules declare it: relative to the
    working directory where it lies inside it, else absolute; wildcards such as ``{dataset}`` stay."""
    absolute = os.path.abspath(str(path))
    inside = os.path.relpath(absolute, WORKDIR)
    return absolute if inside == os.pardir or inside.startswith(os.pardir + os.sep) else inside


if STORAGE:
    DATA, FEATURES, RESULTS = (rel(CFG.to_dict()["paths"][name]) for name in PATH_ROOTS)
    JOB_CFG = cmgh_config.with_overrides(CFG, [f"paths.{name}={storage_local(root)}" for name, root in zip(PATH_ROOTS, (DATA, FEATURES, RESULTS))])
else:
    DATA, FEATURES, RESULTS = (rel(CFG.path(name)) for name in PATH_ROOTS)
    JOB_CFG = CFG
# Under an S3 provider the packed pre-training shards stay in the bucket: the pack rule declares its
# index, manifest and shards apart, the jobs that train declare the index and manifest only, and read
# the shards by byte range (cmgh.data.stream.remote) from where the job config's
# `features.packed.remote.url` says. The endpoint and credentials Snakemake was given reach those jobs
# as the storage plugin's variables (the way a remote executor hands them over; never in a file).
STREAM_SHARDS = workflow.storage_settings.default_storage_provider == "s3"
if STREAM_SHARDS:
    storage_prefix = (workflow.storage_settings.default_storage_prefix or "").rstrip("/")
    JOB_CFG = cmgh_config.with_overrides(JOB_CFG, [f"features.packed.remote.url={storage_prefix}/{os.path.normpath(FEATURES)}"])
    s3_settings = workflow.storage_registry.default_storage_provider.settings
    for field, variable in (("endpoint_url", "ENDPOINT_URL"), ("region", "REGION"), ("access_key", "ACCESS_KEY"), ("secret_key", "SECRET_KEY"), ("token", "TOKEN")):
        if getattr(s3_settings, field, None):
            os.environ.setdefault(f"SNAKEMAKE_STORAGE_S3_{variable}", str(getattr(s3_settings, field)))
# Jobs run the interpreter that runs Snakemake (`make setup`'s .venv: relative where it lies in the
# project, like every other path of a rule's params), or, with `--software-deployment-method conda`,
# the `python` of the environment Snakemake activates for them (workflow/envs/cmgh.yaml, every rule's `conda:`).
USE_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
INTERPRETER = rel(sys.executable)
PYTHON = "python" if USE_CONDA else INTERPRETER if os.sep in INTERPRETER else os.path.join(os.curdir, INTERPRETER)  # never a PATH lookup
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
RESOLVED_CONFIG = rel(layout.resolved_config(RESULTS))
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
    """A cmgh.layout path as the string Snakemake wants: relative to the working directory where it
    lies inside it (`rel`; a shared tree's, a study's root), wildcards such as ``{dataset}`` kept."""
    return rel(path)


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
    """The pack rule's output its readers wait on: its index, written last (with object storage: the whole
    folder; with shards read from the bucket, `STREAM_SHARDS`, the index again)."""
    return p(layout.packed_dir(FEATURES, dataset) if STORAGE and not STREAM_SHARDS else layout.packed_index(FEATURES, dataset))


def packed_manifest(dataset):
    return p(layout.packed_dir(FEATURES, dataset) / layout.FEATURE_MANIFEST)


def packed_outputs(dataset):
    """The pack rule's outputs: `packed_index`, and with shards read from the bucket the manifest and the
    shards' folder apart, so that a job reading the corpus fetches the first two only."""
    if not STREAM_SHARDS:
        return [stored(packed_index(dataset))]
    return [packed_index(dataset), packed_manifest(dataset), directory(p(layout.packed_dir(FEATURES, dataset) / layout.SHARDS_DIR))]


def corpus_index(name, fmt):
    """A pre-training corpus's features: the pack rule's or the extract rule's output."""
    return packed_index(name) if fmt == "packed" else feature_index(name)


def corpus_indexes(variant=None):
    """The features a pre-training run of ``variant`` (the base config's without one) reads: each corpus of
    `pretrain.corpora`, packed or decoded as `features.format` says (with shards read from the bucket, a
    packed corpus's index and manifest: the run hashes the manifest)."""
    corpora = PLAN.corpora(variant)
    manifests = [packed_manifest(name) for name, fmt in corpora if fmt == "packed"] if STREAM_SHARDS else []
    return [corpus_index(name, fmt) for name, fmt in corpora] + manifests


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


include: "stage_inputs.smk"


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
    "scaling": report_table(layout.SCALING_TABLE, "md"),
    "scaling_html": report_table(layout.SCALING_TABLE, "html", "../report/scaling.rst"),
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
    targets = feature_targets() + pretrain_targets() + [report_table(layout.ABLATION_TABLE, "md"), p(Path(RESULTS) / layout.TRACKED_EVALUATIONS)]
    if PLAN.scaling_pairs:
        targets.append(p(layout.scaling_table(RESULTS, "md")))
    if CFG.sweep.run:
        targets.append(p(layout.study_dir(RESULTS, CFG.sweep.study) / layout.BEST_PARAMS))
    return targets
