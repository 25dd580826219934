"""What the core knows of experiment tracking: the :class:`Tracker` protocol, the no-op tracker,
and the datasets a run reads (:class:`DatasetRef`). No mlflow here.

The ground floor of tracking: training and evaluation call a :class:`Tracker` they are handed and
never open one themselves from a backend. The MLflow adapter lives at the edge (:mod:`cmgh.track`);
whoever starts a run (the CLI, the sweep) passes its :data:`TrackerFactory` down, and without one a
run is tracked by :func:`open_null` (nothing).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

from cmgh import layout
from cmgh.config import corpora, corpus_format
from cmgh.io import json_digest, sha256_file

TERMINAL = ("FINISHED", "FAILED", "KILLED")
MISSING = "missing"
TRAINING, EVALUATION = "training", "evaluation"  # MLflow's dataset context of a run's inputs


@dataclass(frozen=True)
class DatasetRef:
    """One dataset a run reads, as its MLflow input records it: the dataset's name, the digest of
    its feature folder (:func:`dataset_digest`), that folder, the context and extra input tags."""

    name: str
    digest: str
    source: str
    context: str
    tags: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Tracker(Protocol):
    """What the core, the CLI and the sweep call on a tracker (and nothing else)."""

    run_id: str | None

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: str | Path) -> None: ...

    def log_text(self, text: str, artifact_file: str) -> None: ...

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...

    def log_datasets(self, datasets: Sequence[DatasetRef]) -> None:
        """Record the datasets the run reads (once per run: a resumed run adds only new ones)."""
        ...

    def log_model(
        self, checkpoint: Path, *, name: str, tags: Mapping[str, Any], params: Mapping[str, Any], weights: bool = False
    ) -> str | None:
        """Record a finished run's checkpoint as a model linked to the run's final metrics (the
        file itself only with ``weights``); returns the model's id (None when nothing is tracked)."""
        ...

    def flush(self) -> None: ...

    def close(self, status: str = "FINISHED") -> None: ...

    def __enter__(self) -> Tracker: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None: ...


class TrackerFactory(Protocol):
    """How a run gets its tracker (:func:`cmgh.track.open_tracker` is the MLflow one): ``cfg`` is
    the config the run computes with, ``run_key`` its key (:func:`cmgh.layout.run_key`), ``stage``
    one of :data:`cmgh.identity.RUN_STAGES`, ``out`` the folder it writes, ``nested_under`` its
    parent run's folder (a path) or key, ``restart`` a new run in place of the folder's old one."""

    def __call__(
        self, cfg: Any, run_key: str, tags: Mapping[str, Any], nested_under: str | os.PathLike[str] | None = None,
        *, stage: str, out: str | os.PathLike[str], restart: bool = False,
    ) -> Tracker: ...  # fmt: skip


def exit_status(exc_type: type[BaseException] | None) -> str:
    """The status a run ends with when its ``with`` block exits: FINISHED, KILLED on Ctrl-C, else FAILED."""
    if exc_type is None:
        return "FINISHED"
    return "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"


class RunContext:
    """``with tracker:`` ends the run with the status of how the block exits (:func:`exit_status`);
    shared by every tracker, which only has to implement ``close``."""

    def close(self, status: str = "FINISHED") -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self.close(exit_status(exc_type))


class NullTracker(RunContext):
    """Tracks nothing: the default, so the core runs without any tracking backend."""

    run_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | Path) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_datasets(self, datasets: Sequence[DatasetRef]) -> None:
        pass

    def log_model(
        self, checkpoint: Path, *, name: str, tags: Mapping[str, Any], params: Mapping[str, Any], weights: bool = False
    ) -> str | None:
        return None

    def flush(self) -> None:
        pass

    def close(self, status: str = "FINISHED") -> None:
        pass


def open_null(
    cfg: Any, run_key: str, tags: Mapping[str, Any], nested_under: str | os.PathLike[str] | None = None,
    *, stage: str, out: str | os.PathLike[str], restart: bool = False,
) -> Tracker:  # fmt: skip
    """The :data:`TrackerFactory` of an untracked run: a :class:`NullTracker`."""
    return NullTracker()


# --------------------------------------------------------------------------- the datasets a run reads


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


def evaluation_dataset(cfg: Any, task: str, dataset: str) -> DatasetRef:
    """The decoded feature folder of ``dataset`` an evaluation task scores on, context ``evaluation``."""
    return dataset_ref(layout.feature_dir(cfg.path("features"), dataset), dataset, EVALUATION, task=task)


def scored_corpus(cfg: Any, task: str, name: str) -> DatasetRef:
    """A pre-training corpus an evaluation of a run's records scores (its features as the run read
    them, packed or decoded), context ``evaluation``."""
    return dataset_ref(layout.corpus_dir(cfg.path("features"), name, corpus_format(cfg, name)), name, EVALUATION, task=task)
