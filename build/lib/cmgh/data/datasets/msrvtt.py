"""MSR-VTT: text-to-video retrieval, in the real layout.

``videodatainfo.json`` (``videos: [{video_id, category, url, start time, end time, split, id}]``,
``sentences: [{caption, video_id, sen_id}]``), a 1k-A style test CSV (``key,vid_key,video_id,sentence``),
clips ``videos/video<N>.mp4``.
"""

from __future__ import annotations

import json

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmgh import layout
from cmgh.data.datasets import AnnotationCheck, DatasetSpec
from cmgh.data.datasets.items import Item, WindowSpec, id_status
from cmgh.data.datasets.download_list import Clip, clip_target
from cmgh.data.io.tables import as_float, as_int, bad, keep, load_json, parse_csv, read_text, write_csv
from cmgh.data.datasets.concepts import make_caption
from cmgh.data.datasets.generator import Job, Plan, Segment, SynthSettings, concept_set, cyclic, item_rng, media_key, youtube_id
from cmgh.errors import DataError
from cmgh.io import atomic_write_text, safe_id
from cmgh.layout import PathLike

MSRVTT_VIDEO_COLUMNS = ("video_id", "category", "url", "start_time", "end_time", "split", "id")


MSRVTT_SENTENCE_COLUMNS = ("caption", "video_id", "sen_id")


MSRVTT_SPLITS = ("train", "validate", "test")


MSRVTT_TEST_COLUMNS = ("key", "vid_key", "video_id", "sentence")


# --------------------------------------------------------------------------------------------
# annotation files


def write_msrvtt_info(path: PathLike, videos: pd.DataFrame, sentences: pd.DataFrame, info: Mapping[str, Any] | None = None) -> Path:
    """``videodatainfo.json`` with MSR-VTT's key names (``"start time"`` has a space)."""
    payload = {
        "info": dict(info or {"contributor": "cmgh synthetic", "data_created": "2016-04-01", "version": "1.0", "year": "2016"}),
        "videos": [
            {
                "category": int(v.category),
                "url": str(v.url),
                "video_id": str(v.video_id),
                "start time": float(v.start_time),
                "end time": float(v.end_time),
                "split": str(v.split),
                "id": int(v.id),
            }
            for v in videos.itertuples(index=False)
        ],
        "sentences": [
            {"caption": str(s.caption), "video_id": str(s.video_id), "sen_id": int(s.sen_id)} for s in sentences.itertuples(index=False)
        ],
    }
    return atomic_write_text(path, json.dumps(payload, ensure_ascii=False) + "\n")


def _entry(path: Path, where: str, entry: Any, key: str, kind: str) -> Any:
    if not isinstance(entry, dict):
        raise DataError(f"{path}: {where}: {type(entry).__name__} is not an object")
    if key not in entry:
        raise DataError(f"{path}: {where}: missing field '{key}'")
    value = entry[key]
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise bad(path, where, key, value, "an integer")
        return as_int(path, where, key, value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise bad(path, where, key, value, "a number")
        return as_float(path, where, key, value)
    if not isinstance(value, str) or (kind == "nonempty" and not value.strip()):
        raise bad(path, where, key, value, "a non-empty string" if kind == "nonempty" else "a string")
    return value


# column -> (JSON key as MSR-VTT spells it, expected kind, allowed values or None)
_Field = tuple[str, str, tuple[str, ...] | None]


_MSRVTT_VIDEO_FIELDS: dict[str, _Field] = {
    "video_id": ("video_id", "nonempty", None),
    "category": ("category", "int", None),
    "url": ("url", "str", None),
    "start_time": ("start time", "float", None),
    "end_time": ("end time", "float", None),
    "split": ("split", "nonempty", MSRVTT_SPLITS),
    "id": ("id", "int", None),
}


_MSRVTT_SENTENCE_FIELDS: dict[str, _Field] = {
    "caption": ("caption", "str", None),
    "video_id": ("video_id", "nonempty", None),
    "sen_id": ("sen_id", "int", None),
}


def _entries(path: Path, data: Mapping[str, Any], key: str, fields: Mapping[str, _Field]) -> dict[str, list[Any]]:
    """Columns of one list of JSON objects, each field checked in order (errors name ``key[i]`` and the field)."""
    columns: dict[str, list[Any]] = {c: [] for c in fields}
    for i, entry in enumerate(data[key]):
        where = f"{key}[{i}]"
        for column, (name, kind, allowed) in fields.items():
            value = _entry(path, where, entry, name, kind)
            if allowed is not None and value not in allowed:
                raise bad(path, where, name, value, f"one of {', '.join(allowed)}")
            columns[column].append(value)
    return columns


def read_msrvtt_info(path: PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(videos[video_id, category, url, start_time, end_time, split, id], sentences[caption, video_id, sen_id])``."""
    path, data = load_json(path, f"MSR-VTT annotations ({layout.MSRVTT_INFO})")
    if not isinstance(data, dict):
        raise DataError(f"{path}: top level is a {type(data).__name__}, expected an object with videos and sentences")
    for key in ("videos", "sentences"):
        if key not in data:
            raise DataError(f"{path}: missing key '{key}' (expected an object with 'videos' and 'sentences' lists)")
        if not isinstance(data[key], list):
            raise DataError(f"{path}: '{key}' is a {type(data[key]).__name__}, expected a list")
    videos = _entries(path, data, "videos", _MSRVTT_VIDEO_FIELDS)
    sentences = _entries(path, data, "sentences", _MSRVTT_SENTENCE_FIELDS)
    vdf = pd.DataFrame(videos, columns=list(MSRVTT_VIDEO_COLUMNS))
    vdf = vdf.astype({"category": "int64", "start_time": "float64", "end_time": "float64", "id": "int64"})
    sdf = pd.DataFrame(sentences, columns=list(MSRVTT_SENTENCE_COLUMNS)).astype({"sen_id": "int64"})
    return vdf, sdf


def write_msrvtt_test(path: PathLike, table: pd.DataFrame) -> Path:
    return write_csv(path, MSRVTT_TEST_COLUMNS, table[list(MSRVTT_TEST_COLUMNS)].itertuples(index=False))


def read_msrvtt_test(path: PathLike) -> pd.DataFrame:
    """1k-A style test queries ``key,vid_key,video_id,sentence`` (one caption per test video)."""
    path, text = read_text(path, "MSR-VTT 1k-A test CSV")
    return parse_csv(path, text, MSRVTT_TEST_COLUMNS, {"sentence": keep}, optional_index=True)


# --------------------------------------------------------------------------------------------
# items


def msrvtt_items(root: Path, spec: WindowSpec | None = None) -> list[Item]:
    """One item per video of the annotation JSON (pre-cut: no ``spec`` of windows)."""
    path = root / layout.MSRVTT_INFO
    videos, _ = read_msrvtt_info(path)
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
    _, sentences = read_msrvtt_info(root / layout.MSRVTT_INFO)
    test_path = root / layout.MSRVTT_TEST
    test = read_msrvtt_test(test_path) if test_path.exists() else pd.DataFrame(columns=list(MSRVTT_TEST_COLUMNS))
    return sentences, test


def tokenized_texts(root: Path) -> tuple[tuple[str, pd.DataFrame, str], ...]:
    """What extraction tokenizes beside the shards: all captions and the 1k-A test queries."""
    sentences, test = msrvtt_texts(root)
    return ("captions", sentences, "caption"), ("test_1ka", test, "sentence")


# --------------------------------------------------------------------------------------------
# generator plan


def plan_msrvtt(settings: SynthSettings, root: Path) -> Plan:
    """One concept per video, several varied descriptions each, and the 1k-A style test list."""
    seed, n_concepts, spec = settings.seed, settings.concepts, settings.own
    concepts = concept_set(n_concepts, seed)
    seconds, per_video = float(spec.clip_seconds), int(spec.captions_per_video)
    plan = Plan("msrvtt", root)
    videos, sentences, test_rows = [], [], []
    offset = 0
    for split_index, (split, count) in enumerate((("train", int(spec.train)), ("validate", int(spec.val)), ("test", int(spec.test)))):
        drng = np.random.default_rng([seed, settings.stream, split_index])
        assigned = cyclic(drng, count, n_concepts)
        for i in range(count):
            number = offset + i
            c = int(assigned[i])
            rng = item_rng(seed, settings.stream, split_index, i)
            ytid = youtube_id(rng)
            start = round(float(rng.uniform(0.0, 300.0)), 2)
            video_id = f"video{number}"
            videos.append((video_id, c % 20, f"https://www.youtube.com/watch?v={ytid}", start, round(start + seconds, 2), split, number))
            texts: list[str] = []
            for _ in range(per_video):
                text = make_caption(concepts[c], rng, "describe")
                for _retry in range(8):  # prefer distinct captions per video, like real annotators
                    if text not in texts:
                        break
                    text = make_caption(concepts[c], rng, "describe")
                texts.append(text)
            sentences += [(t, video_id) for t in texts]
            if split == "test":
                test_rows.append((f"ret{len(test_rows)}", f"msr{number}", video_id, texts[0]))
            plan.jobs.append(
                Job(
                    str(layout.video_file(root, video_id)),
                    media_key(seed, settings.stream, split_index, i),
                    (Segment(seconds, (c,), (c,)),),
                    settings.media,
                    (n_concepts, seed),
                )
            )
        offset += count
    vdf = pd.DataFrame(videos, columns=list(MSRVTT_VIDEO_COLUMNS))
    sdf = pd.DataFrame([(t, v, k) for k, (t, v) in enumerate(sentences)], columns=list(MSRVTT_SENTENCE_COLUMNS))
    plan.writers += [
        (write_msrvtt_info, root / layout.MSRVTT_INFO, vdf, sdf),
        (write_msrvtt_test, root / layout.MSRVTT_TEST, pd.DataFrame(test_rows, columns=list(MSRVTT_TEST_COLUMNS))),
    ]
    return plan


# --------------------------------------------------------------------------------------------
# download


def download_clips(root: Path) -> list[Clip]:
    videos, _ = read_msrvtt_info(root / layout.MSRVTT_INFO)
    clips = []
    for row in videos.itertuples(index=False):
        target, error = clip_target(lambda safe: layout.video_file(root, safe), "video_id", row.video_id)
        clips.append(Clip(row.video_id, row.split, (str(row.category),), row.video_id, target, error=error))
    return clips


SPEC = DatasetSpec(
    name="msrvtt",
    annotations=(layout.MSRVTT_INFO, layout.MSRVTT_TEST),
    items=msrvtt_items,
    plan=plan_msrvtt,
    clips=download_clips,
    checks=(
        AnnotationCheck(layout.MSRVTT_INFO, read_msrvtt_info, "MSR-VTT's annotation JSON (an object with videos and sentences lists)"),
        AnnotationCheck(layout.MSRVTT_TEST, read_msrvtt_test, f"the MSR-VTT 1k-A test CSV (header {','.join(MSRVTT_TEST_COLUMNS)})"),
    ),
    classes_help="MSR-VTT category numbers",
    tokenized=True,
    texts=tokenized_texts,
)
