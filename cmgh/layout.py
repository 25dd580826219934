"""Every path of the project, in one place: dataset files, feature folders and the results tree.

The workflow's rules, the CLI, the evaluation, the sweep and the report all ask this module, so
a file name or a folder pattern is written once. Each function takes its root folder and the
names that select one item; passing Snakemake wildcards (``"{backbone}"``) instead of values gives
the rule's pattern, so a rule and the code that writes the file cannot disagree.

Kept import-free (only :mod:`pathlib`): the Snakefile imports it at parse time.

Results tree (``paths.results``)::

    pretrain/{backbone}/{variant}/seed{seed}/   one pre-training run (checkpoint.pt, train_log.jsonl, ...)
    eval/{task}/{backbone}/{variant}/seed{seed}/  one evaluation (metrics.json, task extras)
    sweep/{study}/                              one Optuna study of one storage (study.yaml, trials.csv, best_params.yaml, plots)
    tables/, figures/, report/                  the report (report/: its front page, landing.{rst,md})
    logs/, benchmarks/                          one file per workflow job
"""

from __future__ import annotations

import os
from pathlib import Path

PathLike = str | os.PathLike[str]

# --------------------------------------------------------------------------- raw datasets
# Under ``paths.data/<dataset>/``, in the real datasets' layouts.

STAMP = ".complete"  # written last by `cmgh data synth` and `cmgh data download`: the dataset is whole
GENERATED = ".generated.json"  # written first by `cmgh data synth`: every file it writes; a regeneration deletes only these
DOWNLOAD_MANIFEST = "download_manifest.csv"
DOWNLOAD_STAGING = ".download"
DOWNLOAD_SUMMARY = "download_summary.csv"  # counts per kind and status, beside the manifest
DOWNLOAD_JOURNAL = "journal.csv"  # in DOWNLOAD_STAGING: manifest rows of the run in progress
DOWNLOAD_LOCK = "lock"  # in DOWNLOAD_STAGING: one download per dataset folder

HOWTO100M_VIDEOS = "HowTo100M_v1.csv"
HOWTO100M_CAPTIONS = "caption.json"
NOISE_LABELS = "noise_labels.csv"  # generated ground truth: only the noise evaluation reads it
VIDEOS_DIR = "videos"  # howto100m/ and youtube8m/videos/<video_id>.mp4, msrvtt/videos/video<N>.mp4

KINETICS_ANNOTATIONS_DIR = "annotations"
KINETICS_SPLIT_FILES = {"train": "train.csv", "val": "validate.csv", "test": "test.csv"}

AUDIOSET_CLASSES = "class_labels_indices.csv"
AUDIOSET_SEGMENT_FILES = {"train": "balanced_train_segments.csv", "eval": "eval_segments.csv"}
AUDIOSET_PRETRAIN_SEGMENT_FILES = ("balanced_train_segments.csv", "unbalanced_train_segments.csv")  # packed for pre-training
AUDIOSET_SEGMENTS_SUFFIX = "_segments.csv"  # every segment CSV (balanced_train, unbalanced_train, eval)
AUDIOSET_CLIPS_DIR = "clips"

MSRVTT_INFO = "videodatainfo.json"
MSRVTT_TEST = "MSRVTT_JSFUSION_test.csv"

YOUTUBE8M_VOCABULARY = "vocabulary.csv"
YOUTUBE8M_RECORDS_DIR = "video"  # video-level TFRecords: video/{train,validate,test}NNNN.tfrecord
YOUTUBE8M_RECORD_SUFFIX = ".tfrecord"
YOUTUBE8M_IDS = "video_ids.csv"  # id,youtube_id: the id lookup's answers, what the readers resolve pseudo ids with
YOUTUBE8M_LOOKUP_DIR = "lookup"  # the lookup's answers as served, lookup/<first two chars>/<id>.js (generated: a mirror)
YOUTUBE8M_CAPTIONS = HOWTO100M_CAPTIONS  # automatic captions, in HowTo100M's caption.json layout
YOUTUBE8M_VIDEO_CAPTIONS_DIR = "captions"  # captions/<youtube_id>.json: one downloaded video's, caption.json is assembled from them


def dataset_dir(data_root: PathLike, dataset: str) -> Path:
    return Path(data_root) / dataset


def stamp(data_root: PathLike, dataset: str) -> Path:
    """The output of the synth and download rules: present only once the dataset is whole."""
    return dataset_dir(data_root, dataset) / STAMP


def kinetics_split_csv(data_root: PathLike, split: str) -> Path:
    """Kinetics names its val split ``validate`` on disk (``val`` everywhere else in cmgh)."""
    return dataset_dir(data_root, "kinetics") / KINETICS_ANNOTATIONS_DIR / KINETICS_SPLIT_FILES[split]


def video_file(root: PathLike, video_id: str) -> Path:
    """A HowTo100M or MSR-VTT video under its dataset folder ``root`` (``videos/<id>.mp4``)."""
    return Path(root) / VIDEOS_DIR / f"{video_id}.mp4"


def audioset_clip(root: PathLike, ytid: str, start: int, suffix: str = ".mp4") -> Path:
    """An AudioSet clip under its dataset folder ``root`` (``clips/<YTID>_<start>.mp4``)."""
    return Path(root) / AUDIOSET_CLIPS_DIR / f"{ytid}_{start}{suffix}"


def youtube8m_record(root: PathLike, split: str, number: int) -> Path:
    """A video-level TFRecord under the YouTube-8M folder ``root``, named as the dataset's own
    download script saves it (``video/train0042.tfrecord``)."""
    return Path(root) / YOUTUBE8M_RECORDS_DIR / f"{split}{number:04d}{YOUTUBE8M_RECORD_SUFFIX}"


def youtube8m_record_file(root: PathLike, name: str) -> Path:
    """A record file under ``root`` by its name (the ``record`` column of ``youtube8m.read_videos``)."""
    return Path(root) / YOUTUBE8M_RECORDS_DIR / name


def youtube8m_records(root: PathLike) -> list[Path]:
    """Every video-level TFRecord under ``root``, in name order."""
    return sorted((Path(root) / YOUTUBE8M_RECORDS_DIR).glob(f"*{YOUTUBE8M_RECORD_SUFFIX}"))


def youtube8m_ids(root: PathLike) -> Path:
    return Path(root) / YOUTUBE8M_IDS


def youtube8m_lookup(root: PathLike, pseudo_id: str) -> Path:
    """The generated answer of the id lookup for one (path-safe) pseudo id, mirroring the lookup's URL."""
    return Path(root) / YOUTUBE8M_LOOKUP_DIR / pseudo_id[:2] / f"{pseudo_id}.js"


def youtube8m_video_captions(root: PathLike, video_id: str) -> Path:
    """One downloaded video's converted captions (its entry of caption.json) under the YouTube-8M folder ``root``."""
    return Path(root) / YOUTUBE8M_VIDEO_CAPTIONS_DIR / f"{video_id}.json"


def noise_labels(data_root: PathLike, dataset: str = "howto100m") -> Path:
    """A generated pre-training corpus's ground truth (HowTo100M's or YouTube-8M's)."""
    return dataset_dir(data_root, dataset) / NOISE_LABELS


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
    """Written last by extraction (one row per decoded item): the extract rule's output."""
    return feature_dir(features_root, dataset) / FEATURE_INDEX


def feature_manifest(features_root: PathLike, dataset: str) -> Path:
    """Every source item with its status; its hash names the data a run saw (tracking provenance)."""
    return feature_dir(features_root, dataset) / FEATURE_MANIFEST


# Packed pre-training corpora (features.format = packed) under ``paths.features/packed/<dataset>/``:
# ``shards/00000.tar`` (WebDataset layout: ``<key>.mp4`` + ``<key>.json`` per sample) with
# ``shards/00000.json`` (fingerprint + per-item status, written last), index.parquet, manifest.csv.
PACKED_DIR = "packed"
PACKED_MEMBERS = ("mp4", "json")  # the members of one sample in a tar shard, in this order
# index.parquet of a packed corpus: these columns (members' byte ranges in their tar), then the dataset's own
PACKED_INDEX_COLUMNS = ("item_id", "key", "shard", "mp4_offset", "mp4_size", "json_offset", "json_size", "source", "duration", "has_audio")


def packed_dir(features_root: PathLike, dataset: str) -> Path:
    return Path(features_root) / PACKED_DIR / dataset


def packed_index(features_root: PathLike, dataset: str) -> Path:
    """Written last by packing (one row per packed sample, with its members' byte offsets): the pack rule's output."""
    return packed_dir(features_root, dataset) / FEATURE_INDEX


def corpus_dir(features_root: PathLike, dataset: str, fmt: str) -> Path:
    """The features a pre-training run reads for one corpus in ``features.format`` ``fmt``."""
    return packed_dir(features_root, dataset) if fmt == "packed" else feature_dir(features_root, dataset)


def vocab(features_root: PathLike) -> Path:
    """Built from the pre-training captions only, shared by every dataset's text."""
    return Path(features_root) / VOCAB


def shard_file(folder: PathLike, shard: int, suffix: str) -> Path:
    """One file of a shard under a dataset's feature folder (``shards/00000.video.npy``, ``00000.tar``, ``00000.json``)."""
    return Path(folder) / SHARDS_DIR / f"{shard:05d}.{suffix}"


def tokenized_texts(folder: PathLike, name: str) -> tuple[Path, Path]:
    """Token array and table of a text set saved beside a dataset's shards (MSR-VTT ``captions``, ``test_1ka``)."""
    return Path(folder) / f"{name}.npy", Path(folder) / f"{name}.parquet"


# --------------------------------------------------------------------------- results

CONFIG = "config.yaml"  # the resolved config beside every step's outputs

# a pre-training run
CHECKPOINT = "checkpoint.pt"  # only a finished run has it
RESUME = "resume.pt"  # a run in progress; never a declared workflow output (Snakemake deletes those)
SUMMARY = "summary.json"
REPORT_HTML = "report.html"  # `snakemake --report` writes it in the results folder (make reproduce)
TRAIN_LOG = "train_log.jsonl"
PARTIAL_LOG = "train_log.partial.jsonl"  # the log of a run in progress
SCORES_DIR = "scores"  # per-sample indicator dumps, scores/step_<N>.csv

# an evaluation
METRICS = "metrics.json"
EMBEDDINGS = "features.npz"  # cached frozen embeddings of one checkpoint
PREDICTIONS = "predictions.csv"
NOISE_SCORES = "scores.csv"
NOISE_ROC = "roc.csv"
NOISE_WINDOWS = "windows.csv"  # noise detection over training: one row per corpus, indicator, target and window of steps

# a study
STUDY_RECORD = "study.yaml"  # the study's name and (masked) storage: the folder holds that study's outputs only
TRIALS = "trials.csv"
BEST_PARAMS = "best_params.yaml"
TUNED_VARIANT = "tuned_variant.yaml"
SWEEP_PLOTS = ("optimization_history", "param_importances", "parallel_coordinate")
TUNED_NAME = "tuned"  # the variant that tuned_variant.yaml defines

# stores under the results root (when tracking.uri, tracking.artifacts, sweep.storage are empty)
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlruns"
TRACKED_EVALUATIONS = "tracked_evaluations.json"  # the workflow's step that logs its evaluations to MLflow (cmgh.track.deferred)
OPTUNA_DB = "optuna.db"

RANDOM_VARIANT = "random"  # evaluations of the random initialization, beside the pre-trained variants
BASELINE_VARIANT = "baseline"  # the reference every other variant is compared with in the report
STUDY_PAGE = "README.md"  # the results page of a noise study, in its worlds' root (cmgh.report.study_page)


def run_key(backbone: str, variant: str, seed: int | str) -> str:
    """A pre-training run's identity as a relative path (``pretrain/ms/baseline/seed0``)."""
    return f"pretrain/{backbone}/{variant}/seed{seed}"


def run_dir(results: PathLike, backbone: str, variant: str, seed: int | str) -> Path:
    return Path(results) / run_key(backbone, variant, seed)


def scores_file(run: PathLike, step: int) -> Path:
    """One dump of per-sample scores in a run folder (``scores/step_000005.csv``)."""
    return Path(run) / SCORES_DIR / f"step_{step:06d}.csv"


def score_files(run: PathLike) -> list[Path]:
    """Every score dump of a run, in step order (zero-padded names sort by step)."""
    return sorted((Path(run) / SCORES_DIR).glob("step_*.csv"))


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
    return Path(results) / study_key(study)


def study_key(study: str) -> str:
    """A study's identity as a relative path (``sweep/default``): its MLflow parent run's name."""
    return f"sweep/{study}"


def trial_name(number: int | str) -> str:
    """A trial's name: its variant, its folder under the study and the tail of its run key."""
    return f"trial{number}"


def trial_key(study: str, number: int | str) -> str:
    return f"{study_key(study)}/{trial_name(number)}"


def trial_dir(results: PathLike, study: str, number: int | str) -> Path:
    return study_dir(results, study) / trial_name(number)


def trial_seed_dir(results: PathLike, study: str, number: int | str, seed: int | None = None) -> Path:
    """What a trial computes with one pre-training seed: the trial's folder when a study has one
    seed per trial, ``trial{N}/seed{S}/`` when it has several (``sweep.seeds``)."""
    return trial_dir(results, study, number) / (f"seed{seed}" if seed is not None else "")


def trial_pretrain_dir(results: PathLike, study: str, number: int | str, seed: int | None = None) -> Path:
    """The trial's pre-training run (checkpoint, config, train log) of ``seed`` (see :func:`trial_seed_dir`)."""
    return trial_seed_dir(results, study, number, seed) / "pretrain"


def trial_eval_dir(results: PathLike, study: str, number: int | str, step: int | str, seed: int | None = None) -> Path:
    """A validation evaluation of the trial's checkpoint at ``step`` (``eval/step000040``)."""
    return trial_seed_dir(results, study, number, seed) / "eval" / (f"step{step:06d}" if isinstance(step, int) else f"step{step}")


def tables_dir(results: PathLike) -> Path:
    return Path(results) / "tables"


def figures_dir(results: PathLike) -> Path:
    return Path(results) / "figures"


def table(results: PathLike, name: str, suffix: str) -> Path:
    """One table of the report (``tables/ablation.md``): ``name`` is one of the ``*_TABLE`` names below."""
    return tables_dir(results) / f"{name}.{suffix}"


def figure(results: PathLike, name: str, suffix: str = "png") -> Path:
    """One figure of the report (``figures/fractions.png``; each is written as png and pdf)."""
    return figures_dir(results) / f"{name}.{suffix}"


# the report of a results tree (cmgh.report): its tables and figures, by name
METRICS_LONG_TABLE = "metrics_long"  # tables/metrics_long.csv: one row per metric of every evaluation
METRICS_WIDE_TABLE = "metrics_wide"  # tables/metrics_wide.csv
ABLATION_TABLE = "ablation"  # tables/ablation.{csv,md,tex}: every variant against the random floor and the baseline
SUMMARY_TABLE = "summary"  # tables/summary.md
CONFLICT_HIST_FIGURE = "conflict_cosine_hist"  # figures/conflict_cosine_hist.{png,pdf}
FRACTIONS_FIGURE = "fractions"  # figures/fractions.{png,pdf}
TRAINING_CURVES_FIGURE = "training_curves"  # figures/training_curves.{png,pdf}: both losses per variant over steps
NOISE_ROC_FIGURE = "noise_roc"  # figures/noise_roc.{png,pdf}: only where the noise evaluation ran
VARIANTS_FIGURE = "variants_per_task"  # figures/variants_per_task.{png,pdf}: each task's headline metric per variant, mean and 95 % interval over seeds, the random-init floor marked
LANDING = "landing"  # report/landing.{rst,md}: the HTML report's front page and the MLflow experiment's description
# across the worlds of a noise study (cmgh.report.noise_gain), under worlds.root
NOISE_GAIN = "noise_gain"  # tables/noise_gain.csv, figures/noise_gain.{png,pdf}

# the scaling report (cmgh.report.scaling): gain from adding YouTube-8M to the pre-training corpora
SCALING_TABLE = "scaling"  # tables/scaling.{csv,md}
SCALING_FIGURE = "scaling_gain"  # figures/scaling_gain.{png,pdf}


def scaling_table(results: PathLike, suffix: str) -> Path:
    return table(results, SCALING_TABLE, suffix)


def scaling_figure(results: PathLike, suffix: str = "png") -> Path:
    return figure(results, SCALING_FIGURE, suffix)


# noise detection over training (cmgh.report.detection_over_training): mean and interval over seeds of every run's windows
NOISE_TRAINING_TABLE = "noise_over_training"  # tables/noise_over_training.{csv,md}
NOISE_TRAINING_FIGURE = "noise_over_training"  # figures/noise_over_training_{backbone}_{variant}.{png,pdf}


def noise_training_table(results: PathLike, suffix: str) -> Path:
    return table(results, NOISE_TRAINING_TABLE, suffix)


def noise_training_figure(results: PathLike, backbone: str, variant: str, suffix: str = "png") -> Path:
    """One variant's figure (a backbone and variant per file: the Snakemake report lists each)."""
    return figure(results, f"{NOISE_TRAINING_FIGURE}_{backbone}_{variant}", suffix)


def landing(results: PathLike, suffix: str) -> Path:
    """The report's front page (``report/landing.rst`` for `snakemake --report`, ``report/landing.md`` for MLflow)."""
    return Path(results) / "report" / f"{LANDING}.{suffix}"


def job_log(results: PathLike, step: str, name: str) -> Path:
    """The log of one workflow job (``logs/evaluate/kinetics/ms/baseline/seed0.log``)."""
    return Path(results) / "logs" / step / f"{name}.log"


def job_benchmark(results: PathLike, step: str, name: str) -> Path:
    return Path(results) / "benchmarks" / step / f"{name}.tsv"


SHARED_TREE = "shared"  # in a noise study's root: the data and features every world reads alike


def shared_tree(worlds_root: PathLike) -> Path:
    """The folder of a noise study's shared datasets (``<worlds.root>/shared``: its ``data/`` and ``features/``)."""
    return Path(worlds_root) / SHARED_TREE


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
