"""AudioSet: audio event classification (and video-audio pre-training pairs), in the real layout.

Segment CSVs ``YTID, start_seconds, end_seconds, positive_labels`` (quoted, comma-separated MIDs,
with AudioSet's three header comment lines), ``class_labels_indices.csv`` (``index,mid,display_name``),
clips ``clips/<YTID>_<start>.mp4`` or ``.wav``. A segment without a label of the class list is an
item with status :data:`NO_LABEL`, and the labels outside the class list are counted and reported.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmgh import layout
from cmgh.data.datasets import AnnotationCheck, DatasetSpec, Packing
from cmgh.data.datasets.items import Item, WindowSpec, id_status, line_of
from cmgh.data.datasets.packing import PackItem, member_key, unpackable
from cmgh.data.datasets.download_list import Clip, clip_target
from cmgh.data.io.tables import LINE, as_float, as_int, as_text, bad, field_of, parse_csv, read_text
from cmgh.data.datasets.concepts import Concept
from cmgh.data.datasets.generator import Job, Plan, Segment, SynthSettings, check_unique, concept_set, cyclic, item_rng, media_key, youtube_id
from cmgh.io import atomic_write_text, safe_id
from cmgh.layout import PathLike

log = logging.getLogger(__name__)
AUDIOSET_COLUMNS = ("YTID", "start_seconds", "end_seconds", "positive_labels")


AUDIOSET_CLASS_COLUMNS = ("index", "mid", "display_name")


AUDIOSET_CREATED = "Sun Mar  5 10:54:31 2017"  # fixed, so that the files are byte-reproducible


NO_LABEL = "skipped: no known label"  # an AudioSet segment none of whose labels is in the class list


# --------------------------------------------------------------------------------------------
# annotation files


def write_audioset_segments(path: PathLike, table: pd.DataFrame) -> Path:
    """AudioSet's segment CSV byte layout: three ``#`` lines, then ``ID, 30.000, 40.000, "/m/a,/m/b"``."""
    labels = [list(ls) for ls in table["positive_labels"]]
    prelude = (
        f"# Segments csv created {AUDIOSET_CREATED}\n"
        f"# num_ytids={table['YTID'].nunique()}, num_segs={len(table)}, "
        f"num_unique_labels={len({m for ls in labels for m in ls})}, num_positive_labels={sum(len(ls) for ls in labels)}\n"
        f"# {', '.join(AUDIOSET_COLUMNS)}\n"
    )
    lines = [
        f'{ytid}, {float(start):.3f}, {float(end):.3f}, "{",".join(ls)}"\n'
        for ytid, start, end, ls in zip(table["YTID"], table["start_seconds"], table["end_seconds"], labels, strict=True)
    ]
    return atomic_write_text(path, prelude + "".join(lines))


def _mids(path: Path, line: int | str, field: str, value: Any) -> list[str]:
    mids = [m.strip() for m in str(value).split(",")]
    if not mids or any(not m.startswith("/") or len(m) < 3 for m in mids):
        raise bad(path, line, field, value, "a comma-separated list of label MIDs like /m/09x0r")
    return mids


def read_audioset_segments(path: PathLike, lines: bool = False) -> pd.DataFrame:
    """``YTID, start_seconds, end_seconds, positive_labels`` (labels as a list of MIDs; ``lines``: and each row's line number)."""
    path, text = read_text(path, "AudioSet segments CSV")
    parsers = {"YTID": as_text, "start_seconds": as_float, "end_seconds": as_float, "positive_labels": _mids}
    table = parse_csv(path, text, AUDIOSET_COLUMNS, parsers, header=False, skipinitialspace=True, lines=lines)
    return table.astype({"start_seconds": "float64", "end_seconds": "float64"})


def write_audioset_classes(path: PathLike, table: pd.DataFrame) -> Path:
    """``class_labels_indices.csv`` with display names always quoted, as AudioSet ships it."""
    body = "".join(
        f'{int(i)},{mid},"{str(name).replace(chr(34), chr(34) * 2)}"\n'
        for i, mid, name in zip(table["index"], table["mid"], table["display_name"], strict=True)
    )
    return atomic_write_text(path, ",".join(AUDIOSET_CLASS_COLUMNS) + "\n" + body)


def read_audioset_classes(path: PathLike) -> pd.DataFrame:
    path, text = read_text(path, f"AudioSet class list ({layout.AUDIOSET_CLASSES})")
    parsers = {"index": as_int, "mid": lambda p, l, f, v: _mids(p, l, f, v)[0], "display_name": as_text}
    table = parse_csv(path, text, AUDIOSET_CLASS_COLUMNS, parsers).astype({"index": "int64"})
    if table["mid"].duplicated().any():
        dup = table.index[table["mid"].duplicated()][0]
        raise bad(path, int(dup) + 2, "mid", table["mid"][dup], "unique (it appears twice)")
    return table


def audioset_clip_path(root: PathLike, row: Any) -> Path:
    """``<root>/clips/<YTID>_<int(start)>.mp4``, or the ``.wav`` beside it when only that exists."""
    ytid = safe_id(field_of(row, "YTID"), "YTID")
    start = int(float(field_of(row, "start_seconds")))
    mp4, wav = layout.audioset_clip(root, ytid, start), layout.audioset_clip(root, ytid, start, ".wav")
    return wav if not mp4.exists() and wav.exists() else mp4


# --------------------------------------------------------------------------------------------
# items


AUDIOSET_SPLITS = {name: split for split, name in layout.AUDIOSET_SEGMENT_FILES.items()}  # segment CSV -> split


# Pre-training segments (packed): balanced train keeps its evaluation name "train", never eval.
AUDIOSET_PRETRAIN_SPLITS = {
    name: AUDIOSET_SPLITS.get(name, name.removesuffix(layout.AUDIOSET_SEGMENTS_SUFFIX)) for name in layout.AUDIOSET_PRETRAIN_SEGMENT_FILES
}


def audioset_items(root: Path, segment_files: Mapping[str, str] = AUDIOSET_SPLITS) -> list[Item]:
    """One item per segment of the ``segment_files`` (CSV name -> split) that exist, labels as class
    indices. A label outside the class list is dropped and counted (:func:`report_unknown_labels`);
    a segment left without one is an item with status :data:`NO_LABEL`."""
    classes = read_audioset_classes(root / layout.AUDIOSET_CLASSES)
    index_of = dict(zip(classes["mid"], classes["index"], strict=True))
    items = []
    unknown: Counter[str] = Counter()
    segments = 0
    for filename, split in segment_files.items():
        path = root / filename
        if not path.exists():
            continue
        for row in read_audioset_segments(path, lines=True).itertuples(index=False):
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
                    source=audioset_clip_path(root, row),
                    start=None,
                    meta={"YTID": row.YTID, "split": split, "labels": labels},
                    status=None if labels else NO_LABEL,
                )
            )
    report_unknown_labels(root, unknown, segments, sum(it.status == NO_LABEL for it in items))
    return items


def extraction_items(root: Path, spec: WindowSpec | None = None) -> list[Item]:
    """The decoded splits' segments (balanced train and eval; pre-cut: no ``spec`` of windows)."""
    return audioset_items(root)


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


# --------------------------------------------------------------------------------------------
# generator plan


def audioset_classes(concepts: Sequence[Concept], seed: int, stream: int) -> tuple[pd.DataFrame, np.ndarray]:
    """One MID per concept plus group labels shared by several concepts; returns (table, group of concept)."""
    rng = np.random.default_rng([seed, stream, 99])
    alphabet = np.array(list("0123456789abcdefghijklmnopqrstuvwxyz"))
    groups = max(1, math.ceil(len(concepts) / 3))
    group_of = np.arange(len(concepts)) % groups
    mids: list[str] = []
    while len(mids) < len(concepts):
        mid = "/m/0" + "".join(alphabet[rng.integers(36, size=4)])
        if mid not in mids:
            mids.append(mid)
    names = [c.name.capitalize() for c in concepts]
    for g in range(groups):
        mids.append(f"/t/dd{g + 1:05d}")
        names.append(f"{concepts[g].words[2].capitalize()} sounds, family {g + 1}")
    table = pd.DataFrame({"index": np.arange(len(mids)), "mid": mids, "display_name": names})
    return table, group_of


def plan_audioset(settings: SynthSettings, root: Path) -> Plan:
    """Multi-label clips: 1..max_sources concepts mixed (summed audio, all drawn in the video)."""
    seed, n_concepts, spec = settings.seed, settings.concepts, settings.own
    concepts = concept_set(n_concepts, seed)
    classes, group_of = audioset_classes(concepts, seed, settings.stream)
    mids = classes["mid"].tolist()
    seconds, max_sources = float(spec.clip_seconds), min(int(spec.max_sources), n_concepts)
    plan = Plan("audioset", root)
    plan.writers.append((write_audioset_classes, root / layout.AUDIOSET_CLASSES, classes))
    all_ids: list[str] = []
    for split_index, (filename, count) in enumerate(((layout.AUDIOSET_SEGMENT_FILES["train"], int(spec.train)), (layout.AUDIOSET_SEGMENT_FILES["eval"], int(spec.eval)))):
        drng = np.random.default_rng([seed, settings.stream, split_index])
        primary = cyclic(drng, count, n_concepts)
        rows = []
        for i in range(count):
            rng = item_rng(seed, settings.stream, split_index, i)
            ytid = youtube_id(rng)
            start = float(10 * rng.integers(0, 30))
            k = int(rng.integers(1, max_sources + 1))
            others = rng.permutation(np.setdiff1d(np.arange(n_concepts), [primary[i]]))[: k - 1]
            sources = tuple(sorted(int(c) for c in [primary[i], *others]))
            label_idx = sorted(set(sources) | {n_concepts + int(group_of[c]) for c in sources})
            row = {"YTID": ytid, "start_seconds": start, "end_seconds": start + seconds, "positive_labels": [mids[j] for j in label_idx]}
            rows.append(row)
            plan.jobs.append(
                Job(
                    str(layout.audioset_clip(root, ytid, int(start))),
                    media_key(seed, settings.stream, split_index, i),
                    (Segment(seconds, sources, sources),),
                    settings.media,
                    (n_concepts, seed),
                )
            )
        all_ids += [f"{r['YTID']}_{int(r['start_seconds'])}" for r in rows]
        plan.writers.append((write_audioset_segments, root / filename, pd.DataFrame(rows, columns=list(AUDIOSET_COLUMNS))))
    check_unique(all_ids, "YTID")
    return plan


# --------------------------------------------------------------------------------------------
# download


def download_clips(root: Path) -> list[Clip]:
    classes = read_audioset_classes(root / layout.AUDIOSET_CLASSES)
    names = dict(zip(classes["mid"], classes["display_name"], strict=True))
    clips = []
    for path in sorted(root.glob(f"*{layout.AUDIOSET_SEGMENTS_SUFFIX}")):  # unbalanced_train too, when fetched
        split = path.name.removesuffix(layout.AUDIOSET_SEGMENTS_SUFFIX)
        for row in read_audioset_segments(path).itertuples(index=False):
            start = int(float(row.start_seconds))
            labels = tuple(row.positive_labels) + tuple(names[m] for m in row.positive_labels if m in names)
            target, error = clip_target(lambda safe, start=start: layout.audioset_clip(root, safe, start), "YTID", row.YTID)
            clips.append(Clip(f"{row.YTID}_{start}", split, labels, row.YTID, target, float(row.start_seconds), float(row.end_seconds), error))
    return clips


def pack_items(root: Path) -> list[PackItem]:
    """Every segment of the pre-training segment files that exist (never eval), labels as class indices."""
    return [
        PackItem(it.item_id, member_key(it.item_id), it.source, it.meta["YTID"], os.path.relpath(it.source, root),
                 dict(it.meta), labels=tuple(it.meta["labels"]), status=it.status)
        if it.meta else unpackable(it.item_id, it.source, root, str(it.status))
        for it in audioset_items(root, AUDIOSET_PRETRAIN_SPLITS)
    ]


SPEC = DatasetSpec(
    name="audioset",
    annotations=(layout.AUDIOSET_CLASSES, *layout.AUDIOSET_SEGMENT_FILES.values()),
    items=extraction_items,
    plan=plan_audioset,
    clips=download_clips,
    checks=(
        AnnotationCheck(layout.AUDIOSET_CLASSES, read_audioset_classes, f"AudioSet's class list (header {','.join(AUDIOSET_CLASS_COLUMNS)})"),
        AnnotationCheck(f"*{layout.AUDIOSET_SEGMENTS_SUFFIX}", read_audioset_segments, f"an AudioSet segments CSV ({', '.join(AUDIOSET_COLUMNS)})"),
    ),
    classes_help="AudioSet display names or MIDs",
    audio_only=True,
    # The decoded AudioSet holds its balanced training split and the eval split; pre-training never sees an evaluation split.
    pretrain_splits=(AUDIOSET_SPLITS[layout.AUDIOSET_SEGMENT_FILES["train"]],),
    packing=Packing(pack_items, ("YTID", "split", "labels")),
    pack_annotations=(layout.AUDIOSET_CLASSES, *layout.AUDIOSET_PRETRAIN_SEGMENT_FILES),
    pack_required=(layout.AUDIOSET_CLASSES, layout.AUDIOSET_SEGMENT_FILES["train"]),
)
