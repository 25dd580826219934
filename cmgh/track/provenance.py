"""What every tracked run records about where it came from: config hash, code version, data version.

Import-light (no mlflow): the hash and the tags are plain strings the adapter stores as tags, and
the datasets a run reads are :class:`DatasetRef` values the adapter logs as MLflow inputs.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cmgh import layout
from cmgh.config import REPO_ROOT, corpora, corpus_format, run_identity
from cmgh.io import json_digest, sha256_file

RULE_ENV_VARS = ("CMGH_RULE", "SNAKEMAKE_RULE")
MISSING = "missing"
TRAINING, EVALUATION = "training", "evaluation"  # MLflow's dataset context of a run's inputs


def config_hash(cfg: Any, stage: str) -> str:
    """Short hash of what a run of ``stage`` computes from (:func:`cmgh.config.run_identity`)."""
    identity = run_identity(cfg, stage)
    return json_digest(identity, 12)


def file_hash(path: Path) -> str:
    """First 16 hex digits of a file's SHA-256 (``missing`` when there is no file): a data version.
    A run's tags and its dataset inputs both ask for the same manifests: each version is read once."""
    try:
        stat = path.stat()
    except OSError:
        return MISSING
    return _hash_of_version(str(path.resolve()), stat.st_mtime_ns, stat.st_size) if path.is_file() else MISSING


@lru_cache(maxsize=256)
def _hash_of_version(path: str, mtime_ns: int, size: int) -> str:
    """The hash of one version of a file (a rewrite, atomic or not, changes its mtime and so the key)."""
    return sha256_file(path)[:16]


def manifest_tag(dataset: str) -> str:
    """Tag of a corpus manifest's hash: ``manifest_sha256`` for HowTo100M (the name runs have always
    carried), ``manifest_sha256.<dataset>`` for any other corpus."""
    return "manifest_sha256" if dataset == "howto100m" else f"manifest_sha256.{dataset}"


def manifest_tags(cfg: Any) -> dict[str, str]:
    """The hash of the feature manifest of every dataset a pre-training run reads (its corpus)."""
    return {
        manifest_tag(name): file_hash(layout.corpus_dir(cfg.path("features"), name, corpus_format(cfg, name)) / layout.FEATURE_MANIFEST)
        for name, _ in corpora(cfg.to_dict()["pretrain"])
    }


@dataclass(frozen=True)
class DatasetRef:
    """One dataset a run reads, as its MLflow input records it: the dataset's name, the digest of
    its feature folder (:func:`dataset_digest`), that folder, the context and extra input tags."""

    name: str
    digest: str
    source: str
    context: str
    tags: dict[str, str] = field(default_factory=dict)


def dataset_digest(folder: Path) -> str:
    """What a feature folder holds, in 16 hex digits: the hash of its manifest (every source item
    with its status) and of its index (every extracted item), so one item more or less changes it."""
    return json_digest([file_hash(folder / layout.FEATURE_MANIFEST), file_hash(folder / layout.FEATURE_INDEX)], 16)


def dataset_ref(folder: Path, name: str, context: str, **tags: str) -> DatasetRef:
    return DatasetRef(name, dataset_digest(folder), str(folder.resolve()), context, dict(tags))


def training_datasets(cfg: Any) -> list[DatasetRef]:
    """The corpora a pre-training run reads (``pretrain.corpora``, each with its weight), context ``training``."""
    features = cfg.path("features")
    return [
        dataset_ref(layout.corpus_dir(features, name, corpus_format(cfg, name)), name, TRAINING, weight=f"{weight:g}")
        for name, weight in corpora(cfg.to_dict()["pretrain"])
    ]


def evaluation_dataset(cfg: Any, task: str) -> DatasetRef:
    """The decoded feature folder an evaluation task scores on, context ``evaluation``."""
    from cmgh.evaluate import TASK_DATASETS  # import-free: the task -> dataset table only

    name = TASK_DATASETS[task]
    return dataset_ref(layout.feature_dir(cfg.path("features"), name), name, EVALUATION, task=task)


def scored_corpus(cfg: Any, task: str, name: str) -> DatasetRef:
    """A pre-training corpus an evaluation of a run's records scores (its features as the run read
    them, packed or decoded), context ``evaluation``."""
    return dataset_ref(layout.corpus_dir(cfg.path("features"), name, corpus_format(cfg, name)), name, EVALUATION, task=task)


def git_state(cwd: Path | None = None) -> dict[str, str]:
    """``git_commit`` and ``git_dirty`` of the code (empty when git or the repository is missing)."""
    where = str(cwd or REPO_ROOT)

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    status = git("status", "--porcelain")
    state = {"git_commit": commit, "mlflow.source.git.commit": commit}
    if status is not None:
        state["git_dirty"] = "true" if status else "false"
    return state


def provenance_tags(cfg: Any, stage: str) -> dict[str, str]:
    """Tags every cmgh run carries: stage, config hash, code version, data version, noise rates, workflow rule."""
    tags = {
        **git_state(),
        "stage": stage,
        "cmgh.config_hash": config_hash(cfg, stage),
        "noise_audio_rate": str(cfg.data.noise.audio_rate),
        "noise_text_rate": str(cfg.data.noise.text_rate),
        "data_source": str(cfg.data.source),
        **manifest_tags(cfg),
        "mlflow.source.name": "cmgh",
    }
    for var in RULE_ENV_VARS:
        if os.environ.get(var):
            tags["snakemake_rule"] = os.environ[var]
            break
    return tags
