"""YouTube-8M's real format: video-level TFRecords, ``vocabulary.csv`` and the pseudo-id lookup.

The dataset ships no videos, only records of ``tf.train.Example``: ``id`` (2018 release: a
4-character pseudo id), ``labels`` (indices into ``vocabulary.csv``), ``mean_rgb`` (1024 floats)
and ``mean_audio`` (128 floats). The 2017 release stored the YouTube id itself under ``video_id``.
A 2018 pseudo id becomes a YouTube id through the dataset's lookup, whose answers
(``i("<id>","<youtube id>");``, one URL per id) are kept in one table, ``video_ids.csv``: the
download appends each answer as it arrives, the generator writes it whole, and the readers resolve
ids from it alone. The generator also writes the answers as the site serves them, under
``lookup/``, for a mirror or the tests' loopback server.

Layout under ``<data>/youtube8m/`` (names in :mod:`cmgh.layout`)::

    video/{train,validate,test}NNNN.tfrecord   vocabulary.csv   video_ids.csv   lookup/<XX>/<id>.js (generated)
    videos/<youtube_id>.mp4   caption.json (automatic captions, HowTo100M layout)   noise_labels.csv (generated)
"""

from __future__ import annotations

import io
import logging
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmgh import layout
from cmgh.data.io import tfrecord
from cmgh.data.io.tables import as_int, as_text, keep, parse_csv, read_text, write_csv
from cmgh.errors import DataError
from cmgh.io import atomic_write_text, safe_id
from cmgh.layout import PathLike

log = logging.getLogger(__name__)

VOCABULARY_COLUMNS = ("Index", "TrainVideoCount", "KnowledgeGraphId", "Name", "WikiUrl", "Vertical1", "Vertical2", "Vertical3", "WikiDescription")
RECORD_SPLITS = ("train", "validate", "test")
RGB_DIM, AUDIO_DIM = 1024, 128  # mean_rgb, mean_audio
RELEASES = (2018, 2017)  # 2018: pseudo id under ``id``; 2017: YouTube id under ``video_id``
VIDEO_COLUMNS = ("record_id", "youtube_id", "labels", "split", "record")  # :func:`read_videos`
NO_YOUTUBE_ID = "unavailable: no YouTube id"  # feature manifests: a record whose pseudo id the lookup did not resolve
PSEUDO_CHARS = r"[A-Za-z0-9_-]{4}"
PSEUDO_ID = re.compile(f"^{PSEUDO_CHARS}$")
IDS_COLUMNS = ("id", "youtube_id")  # video_ids.csv: the lookup's answers
_APPEND_LOCK = threading.Lock()
_ANSWER = re.compile(r'^\s*i\(\s*"([^"]*)"\s*,\s*"([^"]*)"\s*\)\s*;?\s*$')


# --------------------------------------------------------------------------------------------
# vocabulary.csv


def write_vocabulary(path: PathLike, table: pd.DataFrame) -> Path:
    return write_csv(path, VOCABULARY_COLUMNS, table[list(VOCABULARY_COLUMNS)].itertuples(index=False))


def read_vocabulary(path: PathLike) -> pd.DataFrame:
    """The classes, ``Index`` unique (labels in the records point into it)."""
    path, text = read_text(path, f"YouTube-8M vocabulary ({layout.YOUTUBE8M_VOCABULARY})")
    parsers = {name: keep for name in VOCABULARY_COLUMNS} | {"Index": as_int, "TrainVideoCount": as_int, "Name": as_text}
    table = parse_csv(path, text, VOCABULARY_COLUMNS, parsers)
    duplicated = table["Index"][table["Index"].duplicated()]
    if not duplicated.empty:
        raise DataError(f"{path}: field 'Index': {int(duplicated.iloc[0])} appears twice; expected one row per class")
    return table


# --------------------------------------------------------------------------------------------
# video-level records


def encode_video(video_id: str, labels: Sequence[int], mean_rgb: np.ndarray, mean_audio: np.ndarray, release: int = 2018) -> bytes:
    """One video-level ``tf.train.Example`` as the given release wrote it."""
    if release not in RELEASES:
        raise ValueError(f"release {release!r} is not one of {RELEASES}")
    key = "id" if release == 2018 else "video_id"
    return tfrecord.encode_example({
        key: [video_id.encode("utf-8")],
        "labels": np.asarray(labels, dtype=np.int64),
        "mean_rgb": np.asarray(mean_rgb, dtype=np.float32),
        "mean_audio": np.asarray(mean_audio, dtype=np.float32),
    })


def record_split(path: Path) -> str:
    """The split a record file belongs to, from its name (``train0042.tfrecord`` -> ``train``)."""
    for split in RECORD_SPLITS:
        if path.name.startswith(split):
            return split
    raise DataError(f"{path}: not a YouTube-8M record name (expected {'/'.join(RECORD_SPLITS)}NNNN{layout.YOUTUBE8M_RECORD_SUFFIX})")


def _text(path: Path, number: int, features: Mapping[str, Any], key: str) -> str:
    value = features[key]
    if not isinstance(value, list):  # an int64 or float list where a bytes list belongs
        kind = "int64" if getattr(value, "dtype", None) is not None and value.dtype.kind == "i" else "float"
        raise DataError(f"{path}: record {number}: feature '{key}' is an {kind} list, expected one id as a bytes list")
    if len(value) != 1:
        raise DataError(f"{path}: record {number}: feature '{key}' holds {len(value)} values, expected one id")
    try:
        return value[0].decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: record {number}: feature '{key}' is not UTF-8 text") from None


def read_records(path: PathLike) -> pd.DataFrame:
    """``record_id, youtube_id, labels, split, record`` per example of one video-level or frame-level
    file (a ``SequenceExample`` parses as an ``Example`` of its context: the same field number); ``youtube_id`` is
    empty for a 2018 pseudo id (see :func:`read_videos`). Needs ``labels`` and an id; the mean
    features are checked for their size when present (frame-level files carry none)."""
    path = Path(path)
    split = record_split(path)
    rows = []
    for number, data in enumerate(tfrecord.read_records(path)):
        features = tfrecord.parse_example(data, f"{path}: record {number}")
        if "video_id" in features:
            record_id = youtube_id = _text(path, number, features, "video_id")
        elif "id" in features:
            record_id, youtube_id = _text(path, number, features, "id"), ""
        else:
            raise DataError(f"{path}: record {number}: no 'id' (2018) or 'video_id' (2017) feature")
        labels = features.get("labels")
        if labels is None or (isinstance(labels, list) and not labels):  # absent, or an empty list
            labels = np.zeros(0, np.int64)
        if not isinstance(labels, np.ndarray) or labels.dtype.kind != "i":
            raise DataError(f"{path}: record {number}: feature 'labels' is not an int64 list")
        for key, size in (("mean_rgb", RGB_DIM), ("mean_audio", AUDIO_DIM)):
            value = features.get(key)
            if value is not None and (not isinstance(value, np.ndarray) or value.size != size):
                raise DataError(f"{path}: record {number}: feature '{key}' has {getattr(value, 'size', len(value))} values, expected {size} floats")
        rows.append((record_id, youtube_id, [int(v) for v in labels], split, path.name))
    return pd.DataFrame(rows, columns=list(VIDEO_COLUMNS))


def write_records(path: PathLike, examples: Iterable[bytes]) -> Path:
    return tfrecord.write_records(path, examples)


# --------------------------------------------------------------------------------------------
# the pseudo-id lookup


def lookup_answer(pseudo_id: str, youtube_id: str) -> str:
    """The lookup's answer for one id, byte for byte as the dataset's site serves it."""
    return f'i("{pseudo_id}","{youtube_id}");'


def parse_lookup_answer(text: str, pseudo_id: str, where: str) -> str:
    """The YouTube id in a lookup answer for ``pseudo_id`` (one-line DataError otherwise)."""
    match = _ANSWER.match(text)
    if match is None:
        raise DataError(f"{where}: {text[:60]!r} is not a lookup answer (expected i(\"<id>\",\"<youtube id>\");)")
    if match.group(1) != pseudo_id:
        raise DataError(f"{where}: answers for id {match.group(1)!r}, expected {pseudo_id!r}")
    return safe_id(match.group(2), "youtube id")


def lookup_url(template: str, pseudo_id: str) -> str:
    """``data.download.youtube8m.id_lookup`` filled in: ``{prefix}`` (first two characters), ``{id}``."""
    return template.replace("{prefix}", pseudo_id[:2]).replace("{id}", pseudo_id)


def write_lookup(root: PathLike, pseudo_id: str, youtube_id: str) -> Path:
    """The lookup's answer as the dataset's site serves it, under ``lookup/`` (the generator's copy
    of the server side: what a mirror or the tests' loopback server serves)."""
    return atomic_write_text(layout.youtube8m_lookup(root, safe_id(pseudo_id, "pseudo id")), lookup_answer(pseudo_id, youtube_id))


# --------------------------------------------------------------------------------------------
# the resolved ids: one table, not one file per id (6.1M ids would be 6.1M inodes and opens)


def write_ids(root: PathLike, ids: Mapping[str, str]) -> Path:
    """``video_ids.csv`` (``id,youtube_id``, sorted), atomically: the generator's and the compacted download's."""
    return write_csv(layout.youtube8m_ids(root), IDS_COLUMNS, sorted(ids.items()))


def append_ids(root: PathLike, pairs: Iterable[tuple[str, str]]) -> None:
    """Add answers as they arrive (the download's lookup threads), each line flushed: a killed run
    keeps every answer but a torn last line, which :func:`read_ids` drops."""
    path = layout.youtube8m_ids(root)
    lines = "".join(f"{pseudo},{youtube}\n" for pseudo, youtube in pairs)
    with _APPEND_LOCK:
        fresh = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write((",".join(IDS_COLUMNS) + "\n" if fresh else "") + lines)
            fh.flush()


def read_ids(root: PathLike) -> dict[str, str]:
    """Pseudo id -> YouTube id from ``video_ids.csv`` ({} when absent; a later line wins)."""
    path = layout.youtube8m_ids(root)
    if not path.is_file():
        return {}
    data = path.read_bytes()
    data = data[: data.rfind(b"\n") + 1]  # a torn last line (killed mid-write) is not an answer
    table = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False) if data else pd.DataFrame(columns=list(IDS_COLUMNS))
    if list(table.columns) != list(IDS_COLUMNS):
        raise DataError(f"{path}: header {list(table.columns)} is not {list(IDS_COLUMNS)}")
    bad = ~(table["id"].str.fullmatch(PSEUDO_CHARS) & table["youtube_id"].map(_path_safe))
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
        raise DataError(f"{path}: line {line}: {table['id'].iloc[line - 2]!r},{table['youtube_id'].iloc[line - 2]!r} is not a pseudo id and a path-safe YouTube id")
    return dict(zip(table["id"], table["youtube_id"], strict=True))


def _path_safe(value: str) -> bool:
    try:
        return bool(value) and safe_id(value, "youtube id") == value
    except DataError:
        return False


def read_videos(root: PathLike, splits: Sequence[str] = RECORD_SPLITS) -> pd.DataFrame:
    """Every video of the record files of ``splits``, pseudo ids resolved through ``video_ids.csv``
    (``youtube_id`` empty where there is none); one row per record id."""
    tables = []
    for path in (p for p in layout.youtube8m_records(root) if record_split(p) in splits):
        tables.append(read_records(path))
        if tables[-1].empty:  # never a silent loss of a whole file's videos
            log.warning("%s: holds no records: it contributes no videos (expected video-level examples)", path)
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(VIDEO_COLUMNS))
    table = table.drop_duplicates("record_id", keep="first").reset_index(drop=True)
    pseudo = table["youtube_id"] == ""
    if pseudo.any():
        ids = read_ids(root)
        table.loc[pseudo, "youtube_id"] = [ids.get(record_id, "") for record_id in table.loc[pseudo, "record_id"]]
    return table
