"""Writers and readers of the HowTo100M, Kinetics, AudioSet and MSR-VTT annotation formats (YouTube-8M's: :mod:`cmgh.data.youtube8m`).

The generator writes exactly what the real datasets ship, and the readers accept both, so the
rest of the code never knows whether it runs on the mini world or on the real thing. Readers
validate every row: a malformed one raises :class:`~cmgh.errors.DataError` naming the file, the
1-based line number (header and comment lines included) or JSON field, the value and what was
expected. Writers are deterministic (fixed column order, ``\\n`` line ends, fixed AudioSet date)
and atomic.

Layout under ``cfg.path("data")`` (the names live in :mod:`cmgh.layout`)::

    howto100m/HowTo100M_v1.csv, caption.json, noise_labels.csv, videos/<video_id>.mp4
    kinetics/annotations/{train,validate,test}.csv, <split>/<label>/<ytid>_<start>_<end>.mp4
    audioset/{balanced_train,eval}_segments.csv, class_labels_indices.csv, clips/<YTID>_<start>.mp4
    msrvtt/videodatainfo.json, MSRVTT_JSFUSION_test.csv, videos/video<N>.mp4
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import pandas as pd

from cmgh import layout
from cmgh.data import DATASETS
from cmgh.data.io.tables import (
    as_float,
    as_flag,
    as_int,
    as_text,
    bad,
    field_of,
    keep,
    load_json,
    parse_csv,
    read_text,
    seconds,
    write_csv,
)
from cmgh.errors import DataError
from cmgh.io import atomic_write, atomic_write_text, safe_id, sanitize_id
from cmgh.layout import PathLike

HOWTO_VIDEO_COLUMNS = ("video_id", "category_1", "category_2", "rank", "task_id")
NOISE_COLUMNS = ("video_id", "clip_start", "clip_end", "audio_aligned", "text_aligned")
KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
KINETICS_SPLITS = layout.KINETICS_SPLIT_FILES  # split -> annotation CSV name
AUDIOSET_COLUMNS = ("YTID", "start_seconds", "end_seconds", "positive_labels")
AUDIOSET_CLASS_COLUMNS = ("index", "mid", "display_name")
AUDIOSET_CREATED = "Sun Mar  5 10:54:31 2017"  # fixed, so that the files are byte-reproducible
MSRVTT_VIDEO_COLUMNS = ("video_id", "category", "url", "start_time", "end_time", "split", "id")
MSRVTT_SENTENCE_COLUMNS = ("caption", "video_id", "sen_id")
MSRVTT_SPLITS = ("train", "validate", "test")
MSRVTT_TEST_COLUMNS = ("key", "vid_key", "video_id", "sentence")


def dataset_root(cfg: Any, name: str) -> Path:
    """Folder of one dataset under ``paths.data``."""
    if name not in DATASETS:
        raise DataError(f"dataset {name!r} is unknown (expected one of {', '.join(DATASETS)})")
    return layout.dataset_dir(cfg.path("data"), name)


# --------------------------------------------------------------------------------------------
# HowTo100M


def write_howto100m_videos(path: PathLike, table: pd.DataFrame) -> Path:
    return write_csv(path, HOWTO_VIDEO_COLUMNS, table[list(HOWTO_VIDEO_COLUMNS)].itertuples(index=False))


def read_howto100m_videos(path: PathLike, lines: bool = False) -> pd.DataFrame:
    """``HowTo100M_v1.csv``: one row per video (``rank``/``task_id`` integers; ``lines``: and each row's line number)."""
    path, text = read_text(path, f"HowTo100M video list ({layout.HOWTO100M_VIDEOS})")
    parsers = {"video_id": as_text, "category_1": keep, "category_2": keep, "rank": as_int, "task_id": as_int}
    return parse_csv(path, text, HOWTO_VIDEO_COLUMNS, parsers, lines=lines)


def write_howto100m_captions(path: PathLike, captions: Mapping[str, Mapping[str, Sequence[Any]]] | Iterable[tuple[str, Mapping[str, Sequence[Any]]]]) -> Path:
    """``caption.json``: ``{video_id: {"start": [...], "end": [...], "text": [...]}}`` (compact, like the original).

    Streamed entry by entry, so ``captions`` may be a generator of ``(video_id, entry)`` pairs:
    a download assembles millions of videos' captions in flat memory.
    """
    entries = captions.items() if isinstance(captions, Mapping) else captions

    def write(fh: IO[bytes]) -> None:
        fh.write(b"{")
        for n, (vid, c) in enumerate(entries):
            entry = {"start": [float(s) for s in c["start"]], "end": [float(e) for e in c["end"]], "text": [str(t) for t in c["text"]]}
            item = json.dumps(str(vid), ensure_ascii=False) + ":" + json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
            fh.write((b"," if n else b"") + item.encode("utf-8"))
        fh.write(b"}\n")

    return atomic_write(path, write)


def read_howto100m_captions(path: PathLike) -> pd.DataFrame:
    """Long table ``video_id, start, end, text`` sorted by video then start time."""
    path, data = load_json(path, f"HowTo100M captions ({layout.HOWTO100M_CAPTIONS})")
    if not isinstance(data, dict):
        raise DataError(f"{path}: top level is a {type(data).__name__}, expected an object video_id -> captions")
    vids: list[str] = []
    starts: list[float] = []
    ends: list[float] = []
    texts: list[str] = []
    for vid, entry in data.items():
        if not isinstance(entry, dict):
            raise DataError(f"{path}: [{vid!r}]: {type(entry).__name__} is not an object with start, end, text")
        lists = []
        for key in ("start", "end", "text"):
            if key not in entry:
                raise DataError(f"{path}: [{vid!r}]: missing field '{key}' (expected start, end, text lists)")
            if not isinstance(entry[key], list):
                raise bad(path, f"[{vid!r}]", key, entry[key], "a list")
            lists.append(entry[key])
        if not len(lists[0]) == len(lists[1]) == len(lists[2]):
            raise DataError(
                f"{path}: [{vid!r}]: start/end/text have lengths {len(lists[0])}/{len(lists[1])}/{len(lists[2])}, expected equal"
            )
        for i, (s, e, t) in enumerate(zip(*lists, strict=True)):
            where = f"[{vid!r}][{i}]"
            for key, value in (("start", s), ("end", e)):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise bad(path, where, key, value, "a number of seconds")
            s, e = as_float(path, where, "start", s), as_float(path, where, "end", e)
            if e < s:
                raise bad(path, where, "end", e, f"at or after start {s}")
            if not isinstance(t, str):
                raise bad(path, where, "text", t, "a string")
            vids.append(str(vid))
            starts.append(s)
            ends.append(e)
            texts.append(t)
    table = pd.DataFrame({"video_id": vids, "start": starts, "end": ends, "text": texts}, columns=["video_id", "start", "end", "text"])
    table = table.astype({"start": "float64", "end": "float64"})
    return table.sort_values(["video_id", "start"], kind="stable").reset_index(drop=True)


def write_noise_labels(path: PathLike, table: pd.DataFrame) -> Path:
    rows = (
        (r.video_id, seconds(r.clip_start), seconds(r.clip_end), int(r.audio_aligned), int(r.text_aligned))
        for r in table.itertuples(index=False)
    )
    return write_csv(path, NOISE_COLUMNS, rows)


def read_noise_labels(path: PathLike) -> pd.DataFrame:
    """Ground truth of the pre-training noise: for the noise-detection evaluation only."""
    path, text = read_text(path, f"noise labels ({layout.NOISE_LABELS})")
    parsers = {"video_id": as_text, "clip_start": as_float, "clip_end": as_float, "audio_aligned": as_flag, "text_aligned": as_flag}
    table = parse_csv(path, text, NOISE_COLUMNS, parsers)
    return table.astype({"clip_start": "float64", "clip_end": "float64", "audio_aligned": "int64", "text_aligned": "int64"})


# --------------------------------------------------------------------------------------------
# Kinetics


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
# AudioSet


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
# MSR-VTT


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
