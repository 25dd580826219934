"""Frozen-encoder embeddings for the downstream tasks, extracted once per checkpoint and cached.

(Not to be confused with :mod:`cmgh.data.extract.decoded`, which extracts the datasets' input tensors.)

An evaluation first turns every clip of the downstream dataset into one vector (the encoder is
frozen, in eval mode, no DropToken), then fits and scores probes on those vectors many times
(weight-decay grid). The vectors are cached in :data:`cmgh.layout.EMBEDDINGS` beside the task's outputs, keyed
by a fingerprint of everything they depend on: the checkpoint file's bytes (or "random init" +
seed + model config), the representation space and the dataset's feature index. A changed
checkpoint or re-extracted dataset invalidates the cache; a rerun of the same evaluation skips the
encoder entirely.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm import tqdm

from cmgh import layout
from cmgh.data.stream.decoded import Sample, ShardedClips, collate
from cmgh.errors import DataError
from cmgh.io import atomic_write, json_digest, sha256_file

log = logging.getLogger(__name__)

_KEY = "__cache_key__"


file_digest = sha256_file  # a checkpoint's or index's bytes name the embeddings cached from them


def fingerprint(*parts: Any) -> str:
    """Stable hash of JSON-serializable parts (paths and numbers are stringified)."""
    return json_digest(parts, 32)


def index_digest(features_root: str | Path, dataset: str) -> str:
    """Digest of a dataset's feature index: re-extracting the dataset invalidates its cached embeddings."""
    path = layout.feature_index(features_root, dataset)
    if not path.is_file():
        raise DataError(f"{path}: feature index not found (run `cmgh data extract` for this dataset)")
    return file_digest(path)


def nonempty_split(root: Path, split: str, modalities: tuple[str, ...], where: Callable[[pd.DataFrame], pd.Series] | None = None) -> ShardedClips:
    """One split of an extracted dataset (its index rows ``where`` holds); an empty split is a DataError naming it."""
    ds = ShardedClips(root, split=split, modalities=modalities, where=where)
    if len(ds) == 0:
        raise DataError(f"{root}: split {split!r} has no extracted clips")
    return ds


def load_cache(path: str | Path, key: str) -> dict[str, np.ndarray] | None:
    """The cached arrays if ``path`` exists and was written for ``key``; None otherwise (never raises on a bad file)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if _KEY not in data.files or str(data[_KEY]) != key:
                return None
            return {name: data[name] for name in data.files if name != _KEY}
    except (OSError, ValueError, KeyError) as exc:
        log.warning("%s: unreadable feature cache ignored (%s)", path, exc)
        return None


def save_cache(path: str | Path, key: str, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` + ``key`` atomically as an uncompressed ``.npz``."""
    if _KEY in arrays:
        raise ValueError(f"{_KEY} is reserved")
    buffer = io.BytesIO()
    np.savez(buffer, **{_KEY: np.array(key)}, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write(path, lambda fh: fh.write(buffer.getvalue()))


def cached(path: str | Path, key: str, compute: Callable[[], dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], bool]:
    """``(arrays, hit)``: the cache at ``path`` for ``key``, or ``compute()`` saved there."""
    found = load_cache(path, key)
    if found is not None:
        log.info("%s: feature cache hit", path)
        return found, True
    arrays = compute()
    save_cache(path, key, arrays)
    return arrays, False


class Timer:
    """Accumulates wall time per named phase (encoder forward passes vs probes vs metrics)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def phase(self, name: str) -> _Phase:
        return _Phase(self, name)


class _Phase:
    def __init__(self, timer: Timer, name: str) -> None:
        self.timer, self.name, self.start = timer, name, 0.0

    def __enter__(self) -> _Phase:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.add(self.name, time.perf_counter() - self.start)


@torch.no_grad()
def embed(
    model: nn.Module,
    dataset: Any,
    encode: Callable[[Sample], Tensor],
    batch_size: int,
    desc: str = "embed",
    timer: Timer | None = None,
) -> np.ndarray:
    """``encode(batch) -> [B, D]`` over ``dataset`` in index order, in eval mode: float32 ``[N, D]``.

    Samples are read and collated in the main process (the shards are memory-mapped, reading is
    cheap); only the encoder calls are timed as ``forward``.
    """
    n = len(dataset)
    if n == 0:
        raise DataError(f"{desc}: no items to embed")
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    try:
        for start in tqdm(range(0, n, batch_size), desc=desc, disable=not sys.stderr.isatty(), leave=False):
            batch = collate([dataset[i] for i in range(start, min(n, start + batch_size))])
            tick = time.perf_counter()
            z = encode(batch)
            if timer is not None:
                timer.add("forward", time.perf_counter() - tick)
            out.append(z.detach().float().cpu().numpy())
    finally:
        model.train(was_training)
    result = np.concatenate(out)
    if not np.isfinite(result).all():
        raise DataError(f"{desc}: the encoder produced non-finite embeddings")
    return result
