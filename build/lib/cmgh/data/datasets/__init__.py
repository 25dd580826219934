"""The datasets' registry: one :class:`DatasetSpec` per dataset, each declared by its own module.

A dataset lives in one module of this package, named as the schema's ``data.datasets`` enum names
it (``cmgh/data/datasets/<name>.py``): its columns, annotation readers and writers, items, generator
plan, download clip list and annotation checks, and its ``SPEC``. The stages (``synth``,
``extract``, ``stream``, ``download``) ask this registry and never name a dataset. The schema's
enum order is :func:`names`' order, which keys each dataset's random stream in the generator:
append only.

Importing this package loads no dataset module (and so neither pandas nor the config): a spec is
imported on first use. A dataset module imports PyAV or torch only inside the functions that need
them, so the workflow can read the registry at parse time.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmgh import layout
from cmgh.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from cmgh.data.datasets.items import Item, WindowSpec
    from cmgh.data.datasets.download_list import Clip
    from cmgh.data.datasets.packing import PackItem
    from cmgh.data.datasets.generator import Plan, SynthSettings

Reader = Callable[[Path], object]


@dataclass(frozen=True)
class AnnotationCheck:
    """What a fetched annotation file matching ``pattern`` (relative to the dataset folder) must be:
    what ``read`` accepts (``what`` says it in words, for the manifest)."""

    pattern: str
    read: Reader
    what: str


@dataclass(frozen=True)
class Packing:
    """How a pre-training corpus is packed: its sources (one per video or segment, with captions and
    labels) and the columns its packed index carries besides the generic ones."""

    items: Callable[[Path], list[PackItem]]
    columns: tuple[str, ...]


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the stages need to know about one dataset. Paths are relative to its folder."""

    name: str
    annotations: tuple[str, ...]  # the annotation files its readers open besides the media
    items: Callable[[Path, WindowSpec], list[Item]]  # (root, how videos are cut) -> the examples to extract
    plan: Callable[[SynthSettings, Path], Plan]  # (its generator settings, root) -> what the generator writes
    clips: Callable[[Path], list[Clip]]  # root -> every clip its annotation files (on disk) name
    checks: tuple[AnnotationCheck, ...]  # what a downloaded annotation file must be
    classes_help: str  # what `cmgh data download --classes` takes for it
    download_check: Callable[[str, Mapping[str, Any]], None] | None = None  # (key, data.download.<name>): what its sources need beyond the common keys (ConfigError)
    # Pre-training corpus with timed captions: each window takes the captions nearest it (MIL-NCE
    # positives); a video without captions gives windows without text (video-audio pairs).
    captioned: bool = False
    # Text tokenized at extraction, with the one vocabulary (:attr:`vocabulary` of the dataset
    # that has it): words outside it become <unk>.
    tokenized: bool = False
    # The generator writes a noise ground truth (noise_labels.csv): what the workflow plans noise
    # detection over training for before any file exists (at run time the file decides).
    noise_truth: bool = False
    audio_only: bool = False  # its clips may lack a video stream (kept as audio, not corrupt)
    pretrain_splits: tuple[str, ...] | None = None  # decoded splits pre-training may use (None: all)
    packing: Packing | None = None  # None: not a packable pre-training corpus
    pack_annotations: tuple[str, ...] | None = None  # what packing reads (None: :attr:`annotations`)
    pack_required: tuple[str, ...] = ()  # of those, the ones that must exist
    synth_sections: tuple[str, ...] = ()  # ``data.<section>`` the generator reads besides ``data.synth``
    vocabulary: Callable[[Path], list[str]] | None = None  # root -> the texts the one vocabulary is built from
    texts: Callable[[Path], tuple[tuple[str, pd.DataFrame, str], ...]] | None = None  # (name, table, column) tokenized beside the shards

    def annotation_files(self, data_root: layout.PathLike) -> list[Path]:
        root = layout.dataset_dir(data_root, self.name)
        return [root / rel for rel in self.annotations]

    def pack_files(self, data_root: layout.PathLike) -> tuple[list[Path], list[Path]]:
        """The annotation files packing may read, and those of them that must exist."""
        root = layout.dataset_dir(data_root, self.name)
        files = [root / rel for rel in (self.annotations if self.pack_annotations is None else self.pack_annotations)]
        return files, [root / rel for rel in self.pack_required]

    def check_of(self, rel: str) -> tuple[Reader | None, str]:
        """The reader of the annotation file at ``rel`` and what it expects (None: no reader)."""
        for check in self.checks:
            if fnmatch.fnmatchcase(rel, check.pattern):
                return check.read, check.what
        return None, f"the annotation file {rel}"


@cache
def names() -> tuple[str, ...]:
    """The dataset names, in the schema's order (the order keys each dataset's generator stream)."""
    from cmgh.config import choices

    return tuple(choices("data.datasets"))


@cache
def specs() -> tuple[DatasetSpec, ...]:
    """Every dataset's spec, in :func:`names` order (each module imported on first use)."""
    found = []
    for name in names():
        spec = getattr(importlib.import_module(f"{__name__}.{name}"), "SPEC", None)
        if not isinstance(spec, DatasetSpec) or spec.name != name:
            raise DataError(f"{__name__}.{name} declares no DatasetSpec named {name!r} (SPEC)")
        found.append(spec)
    return tuple(found)


def get(name: str) -> DatasetSpec:
    """The spec of ``name``; a one-line DataError for a name the schema does not know."""
    return specs()[stream_index(name)]


def stream_index(name: str) -> int:
    """The number keying ``name``'s random streams in the generator: its place in :func:`names`."""
    if name not in names():
        raise DataError(f"dataset {name!r} is unknown (expected one of {', '.join(names())})")
    return names().index(name)


def dataset_root(cfg: Any, name: str) -> Path:
    """Folder of one dataset under ``paths.data`` (the name checked)."""
    return layout.dataset_dir(cfg.path("data"), get(name).name)


_FLAGS = {"CAPTIONED": "captioned", "TOKENIZED": "tokenized", "NOISE_TRUTH": "noise_truth"}


def __getattr__(name: str) -> Any:
    """``CAPTIONED``, ``TOKENIZED``, ``NOISE_TRUTH``: the names of the datasets with that flag, in order."""
    if name in _FLAGS:
        value = tuple(spec.name for spec in specs() if getattr(spec, _FLAGS[name]))
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
