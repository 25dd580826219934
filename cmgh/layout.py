"""Every path of the project, in one place: dataset files, feature folders and the results tree.

The workflow's rules, the CLI, the evaluation, the sweep and the report all ask this module, so
a file name or a folder pattern is written once. Each function takes its root folder and the
names that select one item; passing Snakemake wildcards (``"{backbone}"``) instead of values gives
the rule's pattern, so a rule and the code that writes the file cannot disagree.

Kept import-free (only :mod:`pathlib`): the Snakefile imports it at parse time.

Results tree (``paths.results``)::

    pretrain/{backbone}/{variant}/seed{seed}/   one pre-training run (checkpoint.pt, train_log.jsonl, ...)
    eval/{task}/{backbone}/{variant}/seed{seed}/  one evaluation (metrics.json, task extras)
    sweep/{study}/                              one Optuna study (trials.csv, best_params.yaml, plots)
    tables/, figures/                           the report
    logs/, benchmarks/                          one file per workflow job
"""

from __future__ import annotations

import os
from pathlib import Path

PathLike = str | os.PathLike[str]

# --------------------------------------------------------------------------- raw datasets
# Under ``paths.data/<dataset>/``, in the real datasets' layouts.

STAMP = ".complete"  # written last by `cmgh data synth` and `cmgh data download`: the dataset is whole
DOWNLOAD_MANIFEST = "download_manifest.csv"
DOWNLOAD_STAGING = ".download"

HOWTO100M_VIDEOS = "HowTo100M_v1.csv"
HOWTO100M_CAPTIONS = "caption.json"
NOISE_LABELS = "noise_labels.csv"  # generated ground truth: only the noise evaluation reads it
VIDEOS_DIR = "videos"  # howto100m/videos/<video_id>.mp4, msrvtt/videos/video<N>.mp4

KINETICS_ANNOTATIONS_DIR = "annotations"
KINETICS_SPLIT_FILES = {"train": "train.csv", "val": "validate.csv", "test": "test.csv"}

AUDIOSET_CLASSES = "class_labels_indices.csv"
AUDIOSET_SEGMENT_FILES = {"train": "balanced_train_segments.csv", "eval": "eval_segments.csv"}
AUDIOSET_CLIPS_DIR = "clips"

MSRVTT_INFO = "videodatainfo.json"
MSRVTT_TEST = "MSRVTT_JSFUSION_test.csv"


def dataset_dir(data_root: PathLike, dataset: str) -> Path:
    return Path(data_root) / dataset


def stamp(data_root: PathLike, dataset: str) -> Path:
    return dataset_dir(data_root, dataset) / STAMP


def kinetics_split_csv(data_root: PathLike, split: str) -> Path:
    return dataset_dir(data_root, "kinetics") / KINETICS_ANNOTATIONS_DIR / KINETICS_SPLIT_FILES[split]


def annotation_files(data_root: PathLike, dataset: str) -> list[Path]:
    """The annotation files of one dataset (what its readers open besides the media)."""
    root = dataset_dir(data_root, dataset)
    if dataset == "howto100m":
        return [root / HOWTO100M_VIDEOS, root / HOWTO100M_CAPTIONS]
    if dataset == "kinetics":
        return [kinetics_split_csv(data_root, split) for split in KINETICS_SPLIT_FILES]
    if dataset == "audioset":
        return [root / AUDIOSET_CLASSES, *(root / name for name in AUDIOSET_SEGMENT_FILES.values())]
    if dataset == "msrvtt":
        return [root / MSRVTT_INFO, root / MSRVTT_TEST]
    raise ValueError(f"dataset {dataset!r} has no known annotation files")


def noise_labels(data_root: PathLike) -> Path:
    return dataset_dir(data_root, "howto100m") / NOISE_LABELS


def audioset_classes(data_root: PathLike) -> Path:
    return dataset_dir(data_root, "audioset") / AUDIOSET_CLASSES


# --------------------------------------------------------------------------- features
# Under ``paths.features/``: one folder per dataset plus the shared vocabulary.

FEATURE_INDEX = "index.parquet"
FEATURE_MANIFEST = "manifest.csv"
SHARDS_DIR = "shards"
VOCAB = "vocab.json"


def feature_dir(features_root: PathLike, dataset: str) -> Path:
    return Path(features_root) / dataset


def feature_index(features_root: PathLike, dataset: str) -> Path:
    return feature_dir(features_root, dataset) / FEATURE_INDEX


def feature_manifest(features_root: PathLike, dataset: str) -> Path:
    return feature_dir(features_root, dataset) / FEATURE_MANIFEST


def vocab(features_root: PathLike) -> Path:
    return Path(features_root) / VOCAB


# --------------------------------------------------------------------------- results

CONFIG = "config.yaml"  # the resolved config beside every step's outputs

# a pre-training run
CHECKPOINT = "checkpoint.pt"  # only a finished run has it
RESUME = "resume.pt"  # a run in progress; never a declared workflow output (Snakemake deletes those)
SUMMARY = "summary.json"
TRAIN_LOG = "train_log.jsonl"
PARTIAL_LOG = "train_log.partial.jsonl"  # the log of a run in progress
SCORES_DIR = "scores"  # per-sample indicator dumps, scores/step_<N>.csv

# an evaluation
METRICS = "metrics.json"
EMBEDDINGS = "features.npz"  # cached frozen embeddings of one checkpoint
PREDICTIONS = "predictions.csv"
NOISE_SCORES = "scores.csv"
NOISE_ROC = "roc.csv"

# a study
TRIALS = "trials.csv"
BEST_PARAMS = "best_params.yaml"
TUNED_VARIANT = "tuned_variant.yaml"
SWEEP_PLOTS = ("optimization_history", "param_importances", "parallel_coordinate")

RANDOM_VARIANT = "random"  # evaluations of the random initialization, beside the pre-trained variants


def run_key(backbone: str, variant: str, seed: int | str) -> str:
    """A pre-training run's identity as a relative path (``pretrain/ms/baseline/seed0``)."""
    return f"pretrain/{backbone}/{variant}/seed{seed}"


def run_dir(results: PathLike, backbone: str, variant: str, seed: int | str) -> Path:
    return Path(results) / run_key(backbone, variant, seed)


def scores_file(run: PathLike, step: int) -> Path:
    """One dump of per-sample scores in a run folder (``scores/step_000005.csv``)."""
    return Path(run) / SCORES_DIR / f"step_{step:06d}.csv"


def eval_key(task: str, backbone: str, variant: str, seed: int | str) -> str:
    return f"eval/{task}/{backbone}/{variant}/seed{seed}"


def eval_dir(results: PathLike, task: str, backbone: str, variant: str, seed: int | str) -> Path:
    return Path(results) / eval_key(task, backbone, variant, seed)


def eval_metrics(results: PathLike, task: str, backbone: str, variant: str, seed: int | str) -> Path:
    return eval_dir(results, task, backbone, variant, seed) / METRICS


def eval_glob(task: str = "*") -> str:
    """Glob (relative to the results root) of every evaluation's metrics.json of ``task``."""
    return f"eval/{task}/*/*/seed*/{METRICS}"


RUN_GLOB = "pretrain/*/*/seed*"  # every pre-training run folder, relative to the results root


def study_dir(results: PathLike, study: str) -> Path:
    return Path(results) / "sweep" / study


def tables_dir(results: PathLike) -> Path:
    return Path(results) / "tables"


def figures_dir(results: PathLike) -> Path:
    return Path(results) / "figures"


def job_log(results: PathLike, step: str, name: str) -> Path:
    """The log of one workflow job (``logs/evaluate/kinetics/ms/baseline/seed0.log``)."""
    return Path(results) / "logs" / step / f"{name}.log"


def job_benchmark(results: PathLike, step: str, name: str) -> Path:
    return Path(results) / "benchmarks" / step / f"{name}.tsv"


def resolved_config(results: PathLike) -> Path:
    """The workflow's resolved config, the one file every rule's command reads."""
    return Path(results) / "config" / "resolved.yaml"


def task_raw_inputs(data_root: PathLike, task: str) -> list[Path]:
    """Raw dataset files an evaluation reads besides its features (declared as the rule's inputs)."""
    if task == "audioset":
        return [audioset_classes(data_root)]
    if task == "noise":
        return [noise_labels(data_root)]
    return []
