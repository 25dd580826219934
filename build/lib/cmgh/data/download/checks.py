"""What a fetched annotation file must be before it is recorded ``ok``: what its own reader accepts.

A server may answer 200 with an error page, cut a file short, or send JSON of another layout, and
a checksum catches that only where the source publishes one. So every annotation file is parsed,
in staging and before it gets its name in the dataset folder, by the reader that will use it
(each dataset's ``SPEC.checks``, :mod:`cmgh.data.datasets`): a file its reader refuses is ``corrupt``,
never lands, and a re-run fetches it again. A file the layout does not know must at least not be
empty or an HTML page.
"""

from __future__ import annotations

from pathlib import Path

from cmgh.data import datasets
from cmgh.data.download.fetch import CORRUPT, FetchError
from cmgh.errors import DataError

_HTML = (b"<!doctype html", b"<html", b"<head", b"<body")


def check(dataset: str, rel: str, path: Path) -> None:
    """FetchError(corrupt) naming ``rel`` and what it must be (first: the reason is cut at 300
    characters), unless the file at ``path`` is that."""
    read, what = datasets.get(dataset).check_of(rel)
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
