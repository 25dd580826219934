"""What a fetched annotation file must be before it is recorded ``ok``: what its own reader accepts.

A server may answer 200 with an error page, cut a file short, or send JSON of another layout, and
a checksum catches that only where the source publishes one. So every annotation file is parsed,
in staging and before it gets its name in the dataset folder, by the reader that will use it
(:mod:`cmgh.data.formats`, :mod:`cmgh.data.youtube8m`): a file its reader refuses is ``corrupt``,
never lands, and a re-run fetches it again. A file the layout does not know must at least not be
empty or an HTML page.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from pathlib import Path

from cmgh import layout
from cmgh.data import formats
from cmgh.data import youtube8m as yt8m
from cmgh.data.download.fetch import CORRUPT, FetchError
from cmgh.errors import DataError

Reader = Callable[[Path], object]


def _columns(names: tuple[str, ...]) -> str:
    return ",".join(names)


# dataset -> (path pattern in the dataset folder, reader, what the file must be)
READERS: dict[str, tuple[tuple[str, Reader, str], ...]] = {
    "howto100m": (
        (layout.HOWTO100M_VIDEOS, formats.read_howto100m_videos, f"the HowTo100M video list (header {_columns(formats.HOWTO_VIDEO_COLUMNS)})"),
        (layout.HOWTO100M_CAPTIONS, formats.read_howto100m_captions, "HowTo100M's caption.json (video_id -> start, end, text lists)"),
    ),
    "kinetics": (
        (f"{layout.KINETICS_ANNOTATIONS_DIR}/*.csv", formats.read_kinetics, f"a Kinetics annotation CSV (header {_columns(formats.KINETICS_COLUMNS)})"),
    ),
    "audioset": (
        (layout.AUDIOSET_CLASSES, formats.read_audioset_classes, f"AudioSet's class list (header {_columns(formats.AUDIOSET_CLASS_COLUMNS)})"),
        (f"*{layout.AUDIOSET_SEGMENTS_SUFFIX}", formats.read_audioset_segments, f"an AudioSet segments CSV ({', '.join(formats.AUDIOSET_COLUMNS)})"),
    ),
    "msrvtt": (
        (layout.MSRVTT_INFO, formats.read_msrvtt_info, "MSR-VTT's annotation JSON (an object with videos and sentences lists)"),
        (layout.MSRVTT_TEST, formats.read_msrvtt_test, f"the MSR-VTT 1k-A test CSV (header {_columns(formats.MSRVTT_TEST_COLUMNS)})"),
    ),
    "youtube8m": (
        (layout.YOUTUBE8M_VOCABULARY, yt8m.read_vocabulary, f"YouTube-8M's vocabulary (header {_columns(yt8m.VOCABULARY_COLUMNS)})"),
    ),
}
_HTML = (b"<!doctype html", b"<html", b"<head", b"<body")


def reader(dataset: str, rel: str) -> tuple[Reader | None, str]:
    """The reader of the file at ``rel`` in ``dataset``'s folder and what it expects (None: no reader)."""
    for pattern, read, what in READERS.get(dataset, ()):
        if fnmatch.fnmatchcase(rel, pattern):
            return read, what
    return None, f"the annotation file {rel}"


def check(dataset: str, rel: str, path: Path) -> None:
    """FetchError(corrupt) naming ``rel`` and what it must be (first: the reason is cut at 300
    characters), unless the file at ``path`` is that."""
    read, what = reader(dataset, rel)
    with open(path, "rb") as fh:
        head = fh.read(1024)
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if not start:
        raise FetchError(CORRUPT, f"{rel} is empty, not {what}")
    if start.startswith(_HTML):
        raise FetchError(CORRUPT, f"{rel} is an HTML page, not {what} (it begins {head[:40].decode('utf-8', 'replace')!r})")
    if read is None:
        return
    try:
        read(path)
    except DataError as exc:
        detail = str(exc).removeprefix(f"{path}: ")
        raise FetchError(CORRUPT, f"{rel} is not {what}: {detail}") from None
