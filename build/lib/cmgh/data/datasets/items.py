"""What to extract from a dataset: one :class:`Item` per training/evaluation example, and the
machinery the datasets' ``items`` share (safe ids with the annotation line that names them, windows
over a video with the captions nearest each).

The annotation readers turn the real files into tables; a dataset's ``items`` turns those tables
into clip windows with their metadata, independent of how the media are decoded. The pre-training
ground truth (``noise_labels.csv``) is never read here.

An item that cannot be extracted is planned with its manifest status instead of stopping the
dataset: an id that is not a safe file name is :data:`INVALID_ID` (the download's status) naming
the annotation file and line (:func:`id_status`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmgh.data.datasets.caption_json import read_howto100m_captions
from cmgh.errors import DataError
from cmgh.io import safe_id

Meta = dict[str, Any]

INVALID_ID = "invalid id"  # an ID that is not safe as a file name



@dataclass(frozen=True)
class Item:
    """One example: a window of a media file plus the columns it contributes to the index."""

    item_id: str
    source: Path
    start: float | None  # None centres the window in the file (pre-cut downstream clips)
    meta: Meta = field(default_factory=dict)
    captions: tuple[str, ...] = ()
    status: str | None = None  # decided at planning, nothing to decode (no YouTube id, an unsafe id, no known label)


def id_status(value: str, what: str, where: str) -> str | None:
    """None when ``value`` is safe as a file name, else the manifest status of its item:
    :data:`INVALID_ID`, where the annotation names it and why."""
    try:
        safe_id(value, what)
    except DataError as exc:
        return f"{INVALID_ID}: {where}: {exc}"
    return None


def line_of(root: Path, path: Path, line: int) -> str:
    """Where a row of an annotation file is, as a manifest names it (``HowTo100M_v1.csv line 12``)."""
    return f"{os.path.relpath(path, root)} line {int(line)}"


def clip_seconds(features: Any) -> float:
    return float(features.video.frames) / float(features.video.fps)


@dataclass(frozen=True)
class WindowSpec:
    """How a long video is cut into windows (``features``: the clip length, windows per video,
    captions per window), read once from the config (:meth:`from_features`)."""

    seconds: float
    per_video: int
    candidates: int

    @classmethod
    def from_features(cls, features: Any) -> WindowSpec:
        return cls(clip_seconds(features), int(features.clips_per_video), int(features.text.candidates))


def nearest(starts: np.ndarray, ends: np.ndarray, start: float, end: float, k: int) -> np.ndarray:
    """Indices of the ``k`` captions whose midpoints are nearest the clip centre (MIL-NCE positives,
    VATT); ties keep caption order. The one rule for fixed (extracted) and drawn (streamed) windows."""
    centre = 0.5 * (start + end)
    mid = 0.5 * (np.asarray(starts, dtype=float) + np.asarray(ends, dtype=float))
    return np.argsort(np.abs(mid - centre), kind="stable")[:k]


def nearest_captions(track: pd.DataFrame, start: float, end: float, k: int) -> tuple[str, ...]:
    """The texts of :func:`nearest` for one video's caption table."""
    if track.empty:
        return ()
    texts = track["text"].to_numpy()
    order = nearest(track["start"].to_numpy(dtype=float), track["end"].to_numpy(dtype=float), start, end, k)
    return tuple(str(texts[i]) for i in order)


def caption_tracks(path: Path) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """A ``caption.json``'s table per video (HowTo100M's layout, YouTube-8M's converted automatic
    captions) and the empty table a video without captions gets."""
    captions = read_howto100m_captions(path)
    return {vid: grp for vid, grp in captions.groupby("video_id", sort=False)}, captions.iloc[0:0]


def windows(video_id: str, source: Path, track: pd.DataFrame, spec: WindowSpec, meta: Meta, horizon: float | None) -> list[Item]:
    """Up to ``spec.per_video`` non-overlapping windows from the video's start, each with its
    nearest captions; windows after the first must start before ``horizon`` (None: no bound
    here, the decoder drops windows past the video's end)."""
    length = spec.seconds
    items = []
    for k in range(spec.per_video):
        start = k * length
        if k > 0 and horizon is not None and start >= horizon:
            break
        items.append(
            Item(
                item_id=f"{video_id}_{k:03d}",
                source=source,
                start=start,
                meta={"video_id": video_id, **meta, "clip_start": start, "clip_end": start + length},
                captions=nearest_captions(track, start, start + length, spec.candidates),
            )
        )
    return items
