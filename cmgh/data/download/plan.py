"""Which clips a dataset's annotation files ask for, where each one goes, and the user's slice.

The annotation readers of :mod:`cmgh.data.formats` parse the real files; this module turns their
rows into :class:`Clip` requests whose targets are exactly the paths the extractor will read. An
ID that is not a safe file name becomes a request without a target (manifest status
``invalid id``), never a path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cmgh import layout
from cmgh.data import formats, youtube8m as yt8m
from cmgh.errors import DataError
from cmgh.io import safe_id


@dataclass(frozen=True)
class Clip:
    """One media file to obtain."""

    item_id: str
    split: str
    classes: tuple[str, ...]
    source_id: str  # the ID that goes into the clip URL template
    target: Path | None  # None: the ID is not a safe file name
    start: float | None = None  # window in the source video (None: the whole video)
    end: float | None = None
    error: str = ""
    needs_lookup: bool = False  # a YouTube-8M pseudo id without a stored lookup answer (no target yet)


def _target(make: Callable[[str], Path], what: str, value: str) -> tuple[Path | None, str]:
    try:
        return make(safe_id(value, what)), ""
    except DataError as exc:
        return None, str(exc)


def kinetics(root: Path) -> list[Clip]:
    clips = []
    for filename in layout.KINETICS_SPLIT_FILES.values():
        path = root / layout.KINETICS_ANNOTATIONS_DIR / filename
        if not path.exists():
            continue
        for row in formats.read_kinetics(path).itertuples(index=False):
            start, end = int(row.time_start), int(row.time_end)
            target, error = _target(lambda _, row=row: formats.kinetics_clip_path(root, row), "youtube_id", row.youtube_id)
            clips.append(Clip(f"{row.youtube_id}_{start:06d}_{end:06d}", row.split, (row.label,), row.youtube_id, target, start, end, error))
    return clips


def audioset(root: Path) -> list[Clip]:
    classes = formats.read_audioset_classes(root / layout.AUDIOSET_CLASSES)
    names = dict(zip(classes["mid"], classes["display_name"], strict=True))
    clips = []
    for path in sorted(root.glob(f"*{layout.AUDIOSET_SEGMENTS_SUFFIX}")):  # unbalanced_train too, when fetched
        split = path.name.removesuffix(layout.AUDIOSET_SEGMENTS_SUFFIX)
        for row in formats.read_audioset_segments(path).itertuples(index=False):
            start = int(float(row.start_seconds))
            labels = tuple(row.positive_labels) + tuple(names[m] for m in row.positive_labels if m in names)
            target, error = _target(lambda safe, start=start: layout.audioset_clip(root, safe, start), "YTID", row.YTID)
            clips.append(Clip(f"{row.YTID}_{start}", split, labels, row.YTID, target, float(row.start_seconds), float(row.end_seconds), error))
    return clips


def howto100m(root: Path) -> list[Clip]:
    videos = formats.read_howto100m_videos(root / layout.HOWTO100M_VIDEOS)
    clips = []
    for row in videos.itertuples(index=False):
        target, error = _target(lambda safe: layout.video_file(root, safe), "video_id", row.video_id)
        clips.append(Clip(row.video_id, "all", (row.category_1, row.category_2), row.video_id, target, error=error))
    return clips


def msrvtt(root: Path) -> list[Clip]:
    videos, _ = formats.read_msrvtt_info(root / layout.MSRVTT_INFO)
    clips = []
    for row in videos.itertuples(index=False):
        target, error = _target(lambda safe: layout.video_file(root, safe), "video_id", row.video_id)
        clips.append(Clip(row.video_id, row.split, (str(row.category),), row.video_id, target, error=error))
    return clips


def _youtube8m_clip(root: Path, record_id: str, youtube_id: str, split: str, classes: tuple[str, ...]) -> Clip:
    if youtube_id:
        target, error = _target(lambda safe: layout.video_file(root, safe), "youtube id", youtube_id)
        return Clip(record_id, split, classes, youtube_id, target, error=error)
    if not yt8m.PSEUDO_ID.match(record_id):
        return Clip(record_id, split, classes, "", None, error=f"pseudo id {record_id!r} is not 4 characters of [A-Za-z0-9_-]; it cannot be looked up")
    return Clip(record_id, split, classes, "", None, error=f"pseudo id {record_id!r} has no answer of the id lookup in {layout.YOUTUBE8M_IDS}", needs_lookup=True)


def youtube8m(root: Path) -> list[Clip]:
    """Whole videos of every record file on disk, under their YouTube ids (2018 pseudo ids resolved
    through video_ids.csv; one without an answer waits for the lookup, without a target)."""
    vocab = yt8m.read_vocabulary(root / layout.YOUTUBE8M_VOCABULARY)
    names = dict(zip(vocab["Index"], vocab["Name"], strict=True))
    clips = []
    for row in yt8m.read_videos(root).itertuples(index=False):
        classes = tuple(names[i] for i in row.labels if i in names) + tuple(str(i) for i in row.labels)
        clips.append(_youtube8m_clip(root, row.record_id, row.youtube_id, row.split, classes))
    return clips


def resolve_lookups(root: Path, clips: Sequence[Clip]) -> list[Clip]:
    """``clips`` with the ones that waited for the id lookup given their YouTube ids, where an
    answer is stored now (the rest unchanged; item ids and order stay, so a selection stays the same)."""
    ids = yt8m.read_ids(root) if any(c.needs_lookup for c in clips) else {}
    return [_youtube8m_clip(root, c.item_id, ids.get(c.item_id, ""), c.split, c.classes) if c.needs_lookup else c for c in clips]


PLANNERS = {"howto100m": howto100m, "kinetics": kinetics, "audioset": audioset, "msrvtt": msrvtt, "youtube8m": youtube8m}
CLASS_HELP = {
    "kinetics": "Kinetics labels",
    "audioset": "AudioSet display names or MIDs",
    "howto100m": "HowTo100M category_1 or category_2 values",
    "msrvtt": "MSR-VTT category numbers",
    "youtube8m": "YouTube-8M vocabulary names or label indices",
}


def clip_list(name: str, root: Path) -> list[Clip]:
    """Every clip the dataset's annotation files (already on disk) name, once each."""
    seen: set[str] = set()
    unique = []
    for clip in PLANNERS[name](root):
        if clip.item_id not in seen:
            seen.add(clip.item_id)
            unique.append(clip)
    return unique


def select(name: str, clips: Sequence[Clip], classes: Iterable[str] = (), limit: int | None = None) -> list[Clip]:
    """The user's slice: clips of any of ``classes`` (all when empty), at most ``limit`` per split."""
    wanted = {c.strip() for c in classes if c.strip()}
    if wanted:
        known = {c for clip in clips for c in clip.classes}
        unknown = sorted(wanted - known)
        if unknown:
            examples = ", ".join(repr(c) for c in sorted(known)[:5])
            raise DataError(f"{name}: --classes {unknown[0]!r} names no clip (expected {CLASS_HELP[name]}, e.g. {examples})")
        clips = [clip for clip in clips if wanted.intersection(clip.classes)]
    if limit is not None:
        if limit < 1:
            raise DataError(f"--limit {limit}: expected a positive number of clips per split")
        taken: Counter[str] = Counter()
        kept = []
        for clip in clips:
            if taken[clip.split] < limit:
                taken[clip.split] += 1
                kept.append(clip)
        clips = kept
    return list(clips)
