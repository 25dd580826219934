"""Small HowTo100M- and AudioSet-layout trees (real mp4 sources, the real annotation writers),
packed by the real :func:`cmgh.data.extract.packed.pack`: the shards the stream's tests and benchmark read."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cmgh import config as config_mod, layout
from cmgh.data.datasets import audioset, caption_json, howto100m
from cmgh.data.io import encode
from cmgh.data.extract import packed


@dataclass
class Clip:
    frames: np.ndarray | Iterable[np.ndarray]  # uint8 [T,H,W,3] or frames one by one
    fps: int
    audio: np.ndarray | None = None  # float32 mono in [-1, 1]
    sample_rate: int = 8000


def write_howto100m(root: Path, clips: Mapping[str, Clip], captions: Mapping[str, Sequence[tuple[float, float, str]]]) -> Path:
    """``HowTo100M_v1.csv``, ``caption.json`` and ``videos/<id>.mp4`` under ``root`` (the dataset folder)."""
    rows = [(vid, "Food and Entertaining", "Recipes", i + 1, 1000 + i) for i, vid in enumerate(clips)]
    howto100m.write_howto100m_videos(root / layout.HOWTO100M_VIDEOS, pd.DataFrame(rows, columns=list(howto100m.HOWTO_VIDEO_COLUMNS)))
    tracks = {vid: {"start": [c[0] for c in cs], "end": [c[1] for c in cs], "text": [c[2] for c in cs]} for vid, cs in captions.items()}
    caption_json.write_howto100m_captions(root / layout.HOWTO100M_CAPTIONS, tracks)
    for vid, clip in clips.items():
        encode.write_mp4(layout.video_file(root, vid), clip.frames, clip.fps, clip.audio, clip.sample_rate)
    return root


def write_audioset(root: Path, clips: Mapping[tuple[str, int], Clip], labels: Mapping[tuple[str, int], Sequence[int]], classes: int) -> Path:
    """The class list, ``balanced_train_segments.csv`` (10 s segments) and ``clips/<YTID>_<start>.mp4``."""
    mids = [f"/m/0c{i:03d}" for i in range(classes)]
    table = pd.DataFrame({"index": np.arange(classes), "mid": mids, "display_name": [f"Sound {i}" for i in range(classes)]})
    audioset.write_audioset_classes(root / layout.AUDIOSET_CLASSES, table)
    segments = pd.DataFrame(
        [(ytid, float(start), float(start + 10), [mids[j] for j in labels[(ytid, start)]]) for ytid, start in clips],
        columns=list(audioset.AUDIOSET_COLUMNS),
    )
    audioset.write_audioset_segments(root / layout.AUDIOSET_SEGMENT_FILES["train"], segments)
    for (ytid, start), clip in clips.items():
        encode.write_mp4(layout.audioset_clip(root, ytid, start), clip.frames, clip.fps, clip.audio, clip.sample_rate)
    return root


def pack_tree(
    base: Path, dataset: str, overrides: Sequence[str] = (), tune: str | None = packed.TUNE, config_file: Path | None = None
) -> Path:
    """Pack ``base/data/<dataset>`` into ``base/features`` in this process; returns the packed folder."""
    paths = [f"paths.data={base / 'data'}", f"paths.features={base / 'features'}", "features.workers=0"]
    cfg = config_mod.load(config_file, overrides=[*paths, *overrides])
    packed.pack(cfg, dataset, workers=0, tune=tune)
    return layout.packed_dir(cfg.path("features"), dataset)
