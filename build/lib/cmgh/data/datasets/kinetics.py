"""Kinetics: action classification on pre-cut clips, in the real layout.

One CSV ``label,youtube_id,time_start,time_end,split`` per split under ``annotations/``, clips under
``<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from cmgh import layout
from cmgh.data.datasets import AnnotationCheck, DatasetSpec
from cmgh.data.datasets.items import Item, WindowSpec, id_status, line_of
from cmgh.data.datasets.download_list import Clip, clip_target
from cmgh.data.io.tables import LINE, as_int, as_text, bad, field_of, parse_csv, read_text, write_csv
from cmgh.data.datasets.generator import Job, Plan, Segment, SynthSettings, check_unique, concept_set, item_rng, media_key, youtube_id
from cmgh.errors import DataError
from cmgh.io import safe_id, sanitize_id
from cmgh.layout import PathLike

KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")


KINETICS_SPLITS = layout.KINETICS_SPLIT_FILES  # split -> annotation CSV name


# --------------------------------------------------------------------------------------------
# annotation files


def write_kinetics(path: PathLike, table: pd.DataFrame) -> Path:
    rows = ((r.label, r.youtube_id, int(r.time_start), int(r.time_end), r.split) for r in table.itertuples(index=False))
    return write_csv(path, KINETICS_COLUMNS, rows)


def _kinetics_split(path: Path, line: int | str, field: str, value: Any) -> str:
    text = str(value).strip()
    if text not in KINETICS_SPLITS:
        raise bad(path, line, field, value, f"one of {', '.join(KINETICS_SPLITS)}")
    return text


def read_kinetics(path: PathLike, lines: bool = False) -> pd.DataFrame:
    """One Kinetics split CSV ``label,youtube_id,time_start,time_end,split`` (integer seconds; ``lines``: and each row's line number)."""
    path, text = read_text(path, "Kinetics annotation CSV")
    parsers = {"label": as_text, "youtube_id": as_text, "time_start": as_int, "time_end": as_int, "split": _kinetics_split}
    table = parse_csv(path, text, KINETICS_COLUMNS, parsers, lines=lines)
    return table.astype({"time_start": "int64", "time_end": "int64"})


def kinetics_label_dir(label: str) -> str:
    """Folder name of a class: spaces become underscores, anything unsafe is replaced."""
    return sanitize_id(str(label).strip().replace(" ", "_"))


def kinetics_clip_path(root: PathLike, row: Any) -> Path:
    """``<root>/<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4`` (IDs checked path-safe)."""
    split = str(field_of(row, "split"))
    if split not in KINETICS_SPLITS:
        raise DataError(f"kinetics split {split!r} is not one of {', '.join(KINETICS_SPLITS)}")
    youtube_id = safe_id(field_of(row, "youtube_id"), "youtube_id")
    start, end = int(field_of(row, "time_start")), int(field_of(row, "time_end"))
    return Path(root) / split / kinetics_label_dir(field_of(row, "label")) / f"{youtube_id}_{start:06d}_{end:06d}.mp4"


# --------------------------------------------------------------------------------------------
# items


def kinetics_items(root: Path, spec: WindowSpec | None = None) -> list[Item]:
    """One item per clip of the split CSVs (pre-cut: no ``spec`` of windows), labels as class indices."""
    tables = []
    for name in layout.KINETICS_SPLIT_FILES.values():
        path = root / layout.KINETICS_ANNOTATIONS_DIR / name
        table = read_kinetics(path, lines=True)
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
                source=kinetics_clip_path(root, row),
                start=None,
                meta={"youtube_id": row.youtube_id, "label": row.label, "label_index": index_of[row.label], "split": row.split},
            )
        )
    return items


# --------------------------------------------------------------------------------------------
# generator plan


def plan_kinetics(settings: SynthSettings, root: Path) -> Plan:
    """``classes`` action classes = the first concepts, each with train/val/test clips."""
    seed, n_concepts, spec = settings.seed, settings.concepts, settings.own
    concepts = concept_set(n_concepts, seed)
    classes, seconds = int(spec.classes), float(spec.clip_seconds)
    window = max(1, int(round(seconds)))
    counts = {"train": int(spec.train_per_class), "val": int(spec.val_per_class), "test": int(spec.test_per_class)}
    plan = Plan("kinetics", root)
    all_ids: list[str] = []
    for split_index, (split, per_class) in enumerate(counts.items()):
        rows = []
        for i in range(classes * per_class):
            c = i // per_class
            rng = item_rng(seed, settings.stream, split_index, i)
            ytid = youtube_id(rng)
            start = int(rng.integers(0, 290))
            row = {"label": concepts[c].name, "youtube_id": ytid, "time_start": start, "time_end": start + window, "split": split}
            rows.append(row)
            plan.jobs.append(
                Job(
                    str(kinetics_clip_path(root, row)),
                    media_key(seed, settings.stream, split_index, i),
                    (Segment(seconds, (c,), (c,)),),
                    settings.media,
                    (n_concepts, seed),
                )
            )
        all_ids += [r["youtube_id"] for r in rows]
        table = pd.DataFrame(rows, columns=list(KINETICS_COLUMNS))
        plan.writers.append((write_kinetics, root / layout.KINETICS_ANNOTATIONS_DIR / layout.KINETICS_SPLIT_FILES[split], table))
    check_unique(all_ids, "youtube_id")
    return plan


# --------------------------------------------------------------------------------------------
# download


def download_clips(root: Path) -> list[Clip]:
    clips = []
    for filename in layout.KINETICS_SPLIT_FILES.values():
        path = root / layout.KINETICS_ANNOTATIONS_DIR / filename
        if not path.exists():
            continue
        for row in read_kinetics(path).itertuples(index=False):
            start, end = int(row.time_start), int(row.time_end)
            target, error = clip_target(lambda _, row=row: kinetics_clip_path(root, row), "youtube_id", row.youtube_id)
            clips.append(Clip(f"{row.youtube_id}_{start:06d}_{end:06d}", row.split, (row.label,), row.youtube_id, target, start, end, error))
    return clips


SPEC = DatasetSpec(
    name="kinetics",
    annotations=tuple(f"{layout.KINETICS_ANNOTATIONS_DIR}/{name}" for name in layout.KINETICS_SPLIT_FILES.values()),
    items=kinetics_items,
    plan=plan_kinetics,
    clips=download_clips,
    checks=(AnnotationCheck(f"{layout.KINETICS_ANNOTATIONS_DIR}/*.csv", read_kinetics, f"a Kinetics annotation CSV (header {','.join(KINETICS_COLUMNS)})"),),
    classes_help="Kinetics labels",
)
