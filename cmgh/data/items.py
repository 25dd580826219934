"""What to extract from each dataset: one :class:`Item` per training/evaluation example.

The annotation readers (``cmgh.data.formats``) turn the real files into tables; this module turns
those tables into clip windows with their metadata, independent of how the media are decoded.
The pre-training ground truth (``noise_labels.csv``) is never read here.

An item that cannot be extracted is planned with its manifest status instead of stopping the
dataset: an id that is not a safe file name is :data:`INVALID_ID` (the download's status) naming
the annotation file and line (:func:`id_status`); an AudioSet segment without a label of the class
list is :data:`NO_LABEL`, and the labels outside the class list are counted and reported.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmgh import layout
from cmgh.data import formats, youtube8m
from cmgh.data.download.fetch import INVALID_ID
from cmgh.data.io.tables import LINE
from cmgh.errors import DataError
from cmgh.io import safe_id

log = logging.getLogger(__name__)
Meta = dict[str, Any]
NO_LABEL = "skipped: no known label"  # an AudioSet segment none of whose labels is in the class list


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


def howto100m_videos(root: Path) -> list[tuple[str, str | None]]:
    """The ids of ``HowTo100M_v1.csv`` in order, each with None or its :func:`id_status`."""
    path = root / layout.HOWTO100M_VIDEOS
    videos = formats.read_howto100m_videos(path, lines=True)
    return [(vid, id_status(vid, "video_id", line_of(root, path, n))) for vid, n in zip(videos["video_id"], videos[LINE], strict=True)]


def youtube8m_status(root: Path, row: Any) -> str | None:
    """A video of :func:`youtube8m.read_videos` that cannot be extracted: no YouTube id, or an unsafe one."""
    if not row.youtube_id:
        return youtube8m.NO_YOUTUBE_ID
    return id_status(row.youtube_id, "youtube_id", os.path.relpath(layout.youtube8m_record_file(root, row.record), root))


def clip_seconds(features: Any) -> float:
    return float(features.video.frames) / float(features.video.fps)


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
    captions = formats.read_howto100m_captions(path)
    return {vid: grp for vid, grp in captions.groupby("video_id", sort=False)}, captions.iloc[0:0]


def windows(video_id: str, source: Path, track: pd.DataFrame, features: Any, meta: Meta, horizon: float | None) -> list[Item]:
    """Up to ``features.clips_per_video`` non-overlapping windows from the video's start, each with
    its nearest captions; windows after the first must start before ``horizon`` (None: no bound
    here, the decoder drops windows past the video's end)."""
    length = clip_seconds(features)
    items = []
    for k in range(int(features.clips_per_video)):
        start = k * length
        if k > 0 and horizon is not None and start >= horizon:
            break
        items.append(
            Item(
                item_id=f"{video_id}_{k:03d}",
                source=source,
                start=start,
                meta={"video_id": video_id, **meta, "clip_start": start, "clip_end": start + length},
                captions=nearest_captions(track, start, start + length, int(features.text.candidates)),
            )
        )
    return items


def howto100m_items(root: Path, features: Any) -> list[Item]:
    """Non-overlapping clips from the start of each video, each with its nearest captions."""
    tracks, empty = caption_tracks(root / layout.HOWTO100M_CAPTIONS)
    length = clip_seconds(features)
    items: list[Item] = []
    for video_id, status in howto100m_videos(root):
        if status is not None:
            items.append(Item(video_id, root / layout.HOWTO100M_VIDEOS, None, status=status))
            continue
        track = tracks.get(video_id, empty)
        # Clips must overlap the narrated part of the video: the last caption bounds it.
        horizon = float(track["end"].max()) if not track.empty else length
        items += windows(video_id, layout.video_file(root, safe_id(video_id, "video_id")), track, features, {}, horizon)
    return items


def youtube8m_items(root: Path, features: Any) -> list[Item]:
    """Windows of every video of the records (all splits: pre-training uses them all) as for
    HowTo100M, but over the whole video, not the captioned part (the corpus is non-narrative): a
    video without automatic captions gives windows without text (video-audio pairs). A record whose
    pseudo id has no YouTube id (or an unsafe one) is one item with its :func:`youtube8m_status`."""
    videos = youtube8m.read_videos(root)
    tracks, empty = caption_tracks(root / layout.YOUTUBE8M_CAPTIONS)
    items: list[Item] = []
    for row in videos.itertuples(index=False):
        status = youtube8m_status(root, row)
        if status is not None:
            items.append(Item(row.youtube_id or row.record_id, layout.youtube8m_record_file(root, row.record), None, status=status))
            continue
        source = layout.video_file(root, safe_id(row.youtube_id, "youtube_id"))
        meta = {"record_id": row.record_id, "labels": list(row.labels)}
        items += windows(row.youtube_id, source, tracks.get(row.youtube_id, empty), features, meta, None)
    return items


def kinetics_items(root: Path) -> list[Item]:
    tables = []
    for name in layout.KINETICS_SPLIT_FILES.values():
        path = root / layout.KINETICS_ANNOTATIONS_DIR / name
        table = formats.read_kinetics(path, lines=True)
        tables.append(table.assign(annotation=[path] * len(table), where=[line_of(root, path, n) for n in table[LINE]]))
    table = pd.concat([t for t in tables if not t.empty], ignore_index=True)
    classes = sorted(table["label"].unique())
    index_of = {label: i for i, label in enumerate(classes)}
    items = []
    for row in table.itertuples(index=False):
        item_id = f"{row.youtube_id}_{int(row.time_start):06d}_{int(row.time_end):06d}"
        status = id_status(row.youtube_id, "youtube_id", row.where)
        if status is not None:
            items.append(Item(item_id, row.annotation, None, status=status))
            continue
        items.append(
            Item(
                item_id=item_id,
                source=formats.kinetics_clip_path(root, row),
                start=None,
                meta={"youtube_id": row.youtube_id, "label": row.label, "label_index": index_of[row.label], "split": row.split},
            )
        )
    return items


AUDIOSET_SPLITS = {name: split for split, name in layout.AUDIOSET_SEGMENT_FILES.items()}  # segment CSV -> split
# Pre-training segments (packed): balanced train keeps its evaluation name "train", never eval.
AUDIOSET_PRETRAIN_SPLITS = {
    name: AUDIOSET_SPLITS.get(name, name.removesuffix(layout.AUDIOSET_SEGMENTS_SUFFIX)) for name in layout.AUDIOSET_PRETRAIN_SEGMENT_FILES
}
# Decoded splits a pre-training corpus may use (absent: all): the decoded AudioSet holds its
# balanced training split and the eval split, and pre-training never sees an evaluation split.
PRETRAIN_SPLITS: dict[str, tuple[str, ...]] = {"audioset": (AUDIOSET_SPLITS[layout.AUDIOSET_SEGMENT_FILES["train"]],)}


def audioset_items(root: Path, segment_files: Mapping[str, str] = AUDIOSET_SPLITS) -> list[Item]:
    """One item per segment of the ``segment_files`` (CSV name -> split) that exist, labels as class
    indices. A label outside the class list is dropped and counted (:func:`report_unknown_labels`);
    a segment left without one is an item with status :data:`NO_LABEL`."""
    classes = formats.read_audioset_classes(root / layout.AUDIOSET_CLASSES)
    index_of = dict(zip(classes["mid"], classes["index"], strict=True))
    items = []
    unknown: Counter[str] = Counter()
    segments = 0
    for filename, split in segment_files.items():
        path = root / filename
        if not path.exists():
            continue
        for row in formats.read_audioset_segments(path, lines=True).itertuples(index=False):
            item_id = f"{row.YTID}_{int(row.start_seconds)}"
            status = id_status(row.YTID, "YTID", line_of(root, path, getattr(row, LINE)))
            if status is not None:
                items.append(Item(item_id, path, None, status=status))
                continue
            labels = sorted(int(index_of[m]) for m in row.positive_labels if m in index_of)
            missing = [m for m in row.positive_labels if m not in index_of]
            unknown.update(missing)
            segments += bool(missing)
            items.append(
                Item(
                    item_id=item_id,
                    source=formats.audioset_clip_path(root, row),
                    start=None,
                    meta={"YTID": row.YTID, "split": split, "labels": labels},
                    status=None if labels else NO_LABEL,
                )
            )
    report_unknown_labels(root, unknown, segments, sum(it.status == NO_LABEL for it in items))
    return items


def report_unknown_labels(root: Path, unknown: Counter[str], segments: int, unlabelled: int) -> None:
    """One warning for the labels of the segment files missing from the class list."""
    if not unknown:
        return
    names = ", ".join(sorted(unknown)[:8]) + (", ..." if len(unknown) > 8 else "")
    log.warning(
        "%s: %s of %s are not in %s (%s): ignored; %s with no known label left out (manifest status %r)",
        root, _count(sum(unknown.values()), "label"), _count(segments, "segment"), layout.AUDIOSET_CLASSES, names,
        _count(unlabelled, "segment"), NO_LABEL,
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def msrvtt_items(root: Path) -> list[Item]:
    path = root / layout.MSRVTT_INFO
    videos, _ = formats.read_msrvtt_info(path)
    items = []
    for i, row in enumerate(videos.itertuples(index=False)):
        status = id_status(row.video_id, "video_id", f"{layout.MSRVTT_INFO} videos[{i}]")
        if status is not None:
            items.append(Item(row.video_id, path, None, status=status))
            continue
        meta = {"video_id": row.video_id, "split": row.split, "category": int(row.category)}
        items.append(Item(row.video_id, layout.video_file(root, safe_id(row.video_id, "video_id")), None, meta))
    return items


def msrvtt_texts(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All captions (JSON) and the 1k-A test queries (CSV), for tokenization beside the shards."""
    _, sentences = formats.read_msrvtt_info(root / layout.MSRVTT_INFO)
    test_path = root / layout.MSRVTT_TEST
    test = formats.read_msrvtt_test(test_path) if test_path.exists() else pd.DataFrame(columns=list(formats.MSRVTT_TEST_COLUMNS))
    return sentences, test


def pretrain_texts(root: Path) -> list[str]:
    """Every caption of HowTo100M (``root``): the one vocabulary of every run is built from these
    only, whichever corpora a run mixes (YouTube-8M's and MSR-VTT's text reuse it)."""
    return formats.read_howto100m_captions(root / layout.HOWTO100M_CAPTIONS)["text"].astype(str).tolist()


def plan(name: str, root: Path, features: Any) -> list[Item]:
    if name == "howto100m":
        return howto100m_items(root, features)
    if name == "kinetics":
        return kinetics_items(root)
    if name == "audioset":
        return audioset_items(root)
    if name == "msrvtt":
        return msrvtt_items(root)
    if name == "youtube8m":
        return youtube8m_items(root, features)
    raise ValueError(f"unknown dataset {name!r}")
