"""Decode a dataset once into memory-mappable shards, an index table and a manifest.

Layout of ``<features>/<dataset>/``::

    shards/00000.video.npy       uint8   [n, T, S, S, 3]
    shards/00000.audio.npy       float32 [n, samples]           (mono, in [-1, 1])
    shards/00000.text.npy        int32   [n, K, L]              (pre-training: K nearest captions)
    shards/00000.text_mask.npy   bool    [n, K]
    shards/00000.json            per-item status + fingerprint  (written last: marks the shard done
                                 while the arrays have the shapes it implies, :func:`shard_done`)
    index.parquet                one row per decoded item: item_id, shard, row, source, has_video,
                                 has_audio (False: no audio stream, silence in the array), dataset columns
    manifest.csv                 one row per source item: item_id, source, status (``kind: reason``)
    config.yaml                  the resolved config

Items are decoded by a process pool in order; the parent writes each shard as soon as its items
are in, so an interrupted run resumes at the first unfinished shard (:mod:`cmgh.data.extract.shards`,
shared with packing). A missing or corrupt media
file is recorded in the manifest and skipped.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from cmgh import layout
from cmgh.config import Config
from cmgh.data import datasets
from cmgh.data.io import media
from cmgh.data.extract import shards
from cmgh.data.datasets.items import Item, WindowSpec
from cmgh.data.io.tables import load_array
from cmgh.data.extract.text import Vocabulary
from cmgh.errors import DataError
from cmgh.io import atomic_write, atomic_write_json, sweep_debris

log = logging.getLogger(__name__)

MODALITIES = ("video", "audio", "text", "text_mask")
INDEX_COLUMNS = ("item_id", "shard", "row", "source", "has_video", "has_audio")  # then the dataset's own (an empty index has these)
PAST_END = "skipped: window past the video's end"  # its midpoint is not in the video: a frozen last frame, silence


@dataclass(frozen=True)
class DecodeSpec:
    """Everything a worker needs to turn one item into arrays (picklable, no config object)."""

    frames: int
    fps: float
    size: int
    sample_rate: int
    max_tokens: int
    candidates: int
    with_text: bool
    video_optional: bool = False  # AudioSet clips may be audio-only .wav files
    resize: str = "area"  # FFmpeg's scaler in the decoder (part of the fingerprint: older shards used torchvision)


@dataclass
class Decoded:
    item_id: str
    status: str
    arrays: dict[str, np.ndarray] | None = None
    has_video: bool = True
    has_audio: bool = True  # False: the file has no audio stream, its audio array is silence (shards.NO_AUDIO)


def feature_dir(cfg: Config, dataset: str) -> Path:
    """The dataset's feature folder under ``paths.features`` (:func:`cmgh.layout.feature_dir`)."""
    return layout.feature_dir(cfg.path("features"), dataset)


def vocab_path(cfg: Config) -> Path:
    return layout.vocab(cfg.path("features"))


def build_vocab(cfg: Config) -> Path:
    """Vocabulary from HowTo100M's captions only (the one dataset whose spec has ``vocabulary``): one vocabulary for every run and corpus mix
    (YouTube-8M's automatic captions and the downstream text are tokenized with it, so adding a
    corpus changes no token id and every checkpoint's text tower reads the same ids)."""
    (spec,) = [spec for spec in datasets.specs() if spec.vocabulary is not None]
    vocab = Vocabulary.build(spec.vocabulary(datasets.dataset_root(cfg, spec.name)), cfg.features.text.vocab_size, cfg.features.text.min_count)
    path = vocab.save(vocab_path(cfg))
    log.info("vocabulary: %d tokens -> %s", len(vocab), path)
    return path


_VOCAB: Vocabulary | None = None


def _init_worker(vocab_file: str | None) -> None:
    global _VOCAB
    import torch

    torch.set_num_threads(1)
    _VOCAB = Vocabulary.load(vocab_file) if vocab_file else None


def decode_item(item: Item, spec: DecodeSpec) -> Decoded:
    """Decode one item; media errors become a manifest status instead of an exception. A window
    whose midpoint lies past the video's end is skipped (:data:`PAST_END`)."""
    if item.status is not None:
        return Decoded(item.item_id, item.status)
    length = spec.frames / spec.fps
    try:
        start = item.start
        if start is None:
            duration = media.duration(item.source)
            start = max(0.0, (duration - length) / 2.0)
        elif start > 0 and start + length / 2 >= media.duration(item.source):
            return Decoded(item.item_id, PAST_END)
        # The decoder's scaler resizes while converting to RGB (area filter, antialiased): at 720p
        # that is several times cheaper than converting the full frame and resizing afterwards.
        frames = media.decode_video(item.source, start, spec.frames, spec.fps, short_side=spec.size)
        video: np.ndarray | None = np.ascontiguousarray(media.center_crop(frames, spec.size))
    except DataError as exc:
        if not (spec.video_optional and str(exc).endswith("no video stream")):
            return _failed(item, exc)
        video = None
    try:
        audio = media.decode_audio(item.source, start, length, spec.sample_rate)
        has_audio = media.has_audio_stream(item.source)
    except DataError as exc:
        return _failed(item, exc)
    has_video = video is not None
    if video is None:
        video = np.zeros((spec.frames, spec.size, spec.size, 3), np.uint8)
    arrays = {"video": video, "audio": np.asarray(audio, dtype=np.float32)}
    if spec.with_text:
        assert _VOCAB is not None, "worker started without a vocabulary"
        text = np.zeros((spec.candidates, spec.max_tokens), dtype=np.int32)
        mask = np.zeros(spec.candidates, dtype=bool)
        for k, caption in enumerate(item.captions[: spec.candidates]):
            text[k] = _VOCAB.encode(caption, spec.max_tokens)
            mask[k] = True
        arrays["text"], arrays["text_mask"] = text, mask
    return Decoded(item.item_id, shards.OK, arrays, has_video, has_audio)


def _failed(item: Item, exc: DataError) -> Decoded:
    return Decoded(item.item_id, media.manifest_status(item.source, exc))


def _decode_star(args: tuple[Item, DecodeSpec]) -> Decoded:
    return decode_item(*args)


def fingerprint(spec: DecodeSpec, shard_items: Sequence[Item], root: Path) -> str:
    """Identifies a shard's inputs: a changed setting or item list invalidates the shard.

    Sources count relative to the dataset root, so a moved or copied dataset stays resumable; a
    status decided at planning counts too (an item that became unlabelled is not kept decoded).
    """
    rows = [(it.item_id, os.path.relpath(it.source, root), it.start, it.captions, *([it.status] if it.status else [])) for it in shard_items]
    return shards.fingerprint(spec, rows)


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, array, allow_pickle=False))


def array_layout(spec: DecodeSpec, rows: int) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
    """Shape and dtype of each array of a shard holding ``rows`` decoded items (the contract above)."""
    arrays = {
        "video": ((rows, spec.frames, spec.size, spec.size, 3), np.dtype(np.uint8)),
        "audio": ((rows, round(spec.frames / spec.fps * spec.sample_rate)), np.dtype(np.float32)),
        "text": ((rows, spec.candidates, spec.max_tokens), np.dtype(np.int32)),
        "text_mask": ((rows, spec.candidates), np.dtype(bool)),
    }
    return arrays if spec.with_text else {name: arrays[name] for name in ("video", "audio")}


def shard_done(out: Path, k: int, spec: DecodeSpec, group: Sequence[Item], fp: str) -> bool:
    """The shard's JSON is written for ``fp`` and lists ``group``, and each array exists with the
    shape and dtype its ok items give it (memory-mapped: the headers are read, not the data)."""

    def check(records: list[dict[str, Any]]) -> bool:
        if [r["item_id"] for r in records] != [it.item_id for it in group]:
            raise ValueError("its items differ from the plan")
        rows = sum(r["status"] == shards.OK for r in records)
        for name, (shape, dtype) in array_layout(spec, rows).items():
            path = layout.shard_file(out, k, f"{name}.npy")
            array = load_array(path, f"{name} array of shard {k}")
            if array.shape != shape or array.dtype != dtype:
                raise ValueError(f"{path}: {array.dtype} {array.shape}, expected {dtype} {shape}")
        return True

    return bool(shards.finished(layout.shard_file(out, k, "json"), fp, check, "decoding"))


def _write_shard(out: Path, k: int, spec: DecodeSpec, results: Iterator[Decoded], fp: str) -> None:
    decoded = list(results)
    ok = [d for d in decoded if d.arrays is not None]
    for name, (shape, dtype) in array_layout(spec, 0).items():
        array = np.stack([d.arrays[name] for d in ok]) if ok else np.zeros(shape, dtype)  # type: ignore[index]
        _save_npy(layout.shard_file(out, k, f"{name}.npy"), array)
    records = [{"item_id": d.item_id, "status": d.status, "has_video": d.has_video, "has_audio": d.has_audio} for d in decoded]
    atomic_write_json(layout.shard_file(out, k, "json"), {"fingerprint": fp, "items": records})


def decode_spec(cfg: Config, with_text: bool, video_optional: bool = False) -> DecodeSpec:
    f = cfg.features
    return DecodeSpec(
        frames=int(f.video.frames),
        fps=float(f.video.fps),
        size=int(f.video.size),
        sample_rate=int(f.audio.sample_rate),
        max_tokens=int(f.text.max_tokens),
        candidates=int(f.text.candidates),
        with_text=with_text,
        video_optional=video_optional,
    )


def extract(cfg: Config, dataset: str, workers: int | None = None) -> Path:
    """Decode ``dataset`` into shards; returns the index path. Re-running skips finished shards."""
    root = datasets.dataset_root(cfg, dataset)  # checks the name
    dataset_spec = datasets.get(dataset)
    out = feature_dir(cfg, dataset)
    shard_dir = out / layout.SHARDS_DIR
    shard_dir.mkdir(parents=True, exist_ok=True)
    sweep_debris(shard_dir)  # partial arrays a killed run left
    with_text = dataset_spec.captioned
    spec = decode_spec(cfg, with_text, video_optional=dataset_spec.audio_only)
    vocab_file = str(vocab_path(cfg)) if dataset_spec.tokenized else None
    vocab = Vocabulary.load(vocab_file) if vocab_file else None

    planned = dataset_spec.items(root, WindowSpec.from_features(cfg.features))
    if not planned:
        raise DataError(f"{root}: no items found for dataset {dataset!r}")
    groups = shards.split(planned, int(cfg.features.shard_size))
    prints = [fingerprint(spec, g, root) for g in groups]
    pending = [k for k, g in enumerate(groups) if not shard_done(out, k, spec, g, prints[k])]
    todo = [(it, spec) for k in pending for it in groups[k]]
    log.info("%s: %d items in %d shards, %d to decode", dataset, len(planned), len(groups), len(todo))

    n_workers = int(cfg.features.workers if workers is None else workers)
    stream = shards.ordered_map(_decode_star, todo, n_workers, _init_worker, (vocab_file,))
    shards.run(groups, pending, stream, lambda k, results: _write_shard(out, k, spec, results, prints[k]), f"extract {dataset}")
    shards.remove_stale(shard_dir, len(groups))

    index, manifest_rows = _tables(root, out, groups, with_text)
    if dataset_spec.texts is not None:
        assert vocab is not None
        _write_texts(dataset_spec.texts(root), out, vocab, spec.max_tokens)
    return shards.write_tables(cfg, out, dataset, index, manifest_rows)


def _tables(root: Path, out: Path, groups: list[list[Item]], with_text: bool) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The index (ok items) and the manifest (every item; ``ok: no audio stream`` for a file without
    audio, ``ok: no captions`` for a captioned corpus's windows without text). A shard written
    before ``has_audio`` was recorded has its ok files probed for it instead of being decoded again."""
    index_rows: list[dict[str, Any]] = []
    manifest_rows: list[dict[str, Any]] = []
    for k, group in enumerate(groups):
        records = json.loads(layout.shard_file(out, k, "json").read_text())["items"]
        row = 0
        for item, record in zip(group, records, strict=True):
            status = record["status"]
            source = os.path.relpath(item.source, root)
            has_audio = status == shards.OK and bool(record["has_audio"] if "has_audio" in record else _probed_audio(item.source))
            manifest_status = shards.manifest_status(status, with_text and not item.captions, has_audio)
            manifest_rows.append({"item_id": item.item_id, "source": source, "status": manifest_status})
            if status == shards.OK:
                index_rows.append({
                    "item_id": item.item_id, "shard": k, "row": row, "source": source, "has_video": record.get("has_video", True),
                    "has_audio": has_audio, **item.meta,
                })
                row += 1
    return pd.DataFrame(index_rows, columns=None if index_rows else list(INDEX_COLUMNS)), manifest_rows


def _probed_audio(source: Path) -> bool:
    """Whether a file of an older shard has an audio stream (True when it cannot be opened any more: as recorded then)."""
    try:
        return media.has_audio_stream(source)
    except DataError:
        return True


def _write_texts(texts: Sequence[tuple[str, pd.DataFrame, str]], out: Path, vocab: Vocabulary, max_tokens: int) -> None:
    """A dataset's texts tokenized beside its shards (MSR-VTT: all captions and the 1k-A test queries), each with a table."""
    for name, table, column in texts:
        tokens = vocab.encode_many(table[column].astype(str), max_tokens)
        npy, parquet = layout.tokenized_texts(out, name)
        _save_npy(npy, tokens)
        atomic_write(parquet, lambda fh, t=table: t.reset_index(drop=True).to_parquet(fh, index=False))
