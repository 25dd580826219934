"""Safe reading of downloaded zip and tar archives: no member may leave its folder.

Archives come from the internet. Every member name is checked before anything is written: an
absolute name, a drive letter or a ``..`` component rejects the whole archive (it is malicious or
broken). Members are never extracted by the archive library itself: the caller streams a regular
file member into a path it computed, so links, devices and permission bits stored in the archive
have no effect on the disk.
"""

from __future__ import annotations

import fnmatch
import gzip
import lzma
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import IO

from cmgh.data.download.fetch import CORRUPT, UNSAFE, FetchError

_DRIVE = re.compile(r"^[A-Za-z]:")
# What a truncated or damaged archive raises (not OSError as such: a full disk is not corruption).
_BROKEN = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)


def check_name(archive: Path, name: str) -> str:
    """``name`` if it stays inside the extraction folder; FetchError(unsafe archive) otherwise."""
    posix = name.replace("\\", "/")
    parts = PurePosixPath(posix).parts
    if not name or "\x00" in name or posix.startswith("/") or _DRIVE.match(posix) or ".." in parts:
        raise FetchError(UNSAFE, f"{archive.name}: member {name!r} would be written outside the target folder")
    return posix


def matches(name: str, pattern: str) -> bool:
    """A pattern with a '/' matches the member's whole path, one without matches its file name."""
    return fnmatch.fnmatchcase(name if "/" in pattern else PurePosixPath(name).name, pattern)


class Archive:
    """A zip or tar(.gz/.bz2/.xz) file whose member names have all been checked."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            if zipfile.is_zipfile(self.path):
                self._zip: zipfile.ZipFile | None = zipfile.ZipFile(self.path)
                entries = [(i.filename, not i.is_dir() and not _zip_is_link(i)) for i in self._zip.infolist()]
            elif tarfile.is_tarfile(self.path):
                self._zip = None
                with tarfile.open(self.path, "r:*") as tar:
                    entries = [(m.name, m.isreg()) for m in tar.getmembers()]
            else:
                raise FetchError(CORRUPT, f"{self.path.name}: neither a zip nor a tar archive")
        except _BROKEN as exc:
            raise FetchError(CORRUPT, f"{self.path.name}: unreadable archive ({exc})") from None
        names = [check_name(self.path, name) for name, _ in entries]  # all of them, before any write
        self.files = [name for name, (_, regular) in zip(names, entries, strict=True) if regular]

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._zip is not None:
            self._zip.close()

    def select(self, pattern: str) -> list[str]:
        return [name for name in self.files if matches(name, pattern)]

    def stream(self, wanted: set[str]) -> Iterator[tuple[str, IO[bytes]]]:
        """``(name, readable)`` of the wanted regular files, in archive order, in one pass."""
        try:
            if self._zip is not None:
                for info in self._zip.infolist():
                    if info.filename.replace("\\", "/") in wanted and not info.is_dir() and not _zip_is_link(info):
                        with self._zip.open(info) as fh:
                            yield info.filename.replace("\\", "/"), fh
                return
            with tarfile.open(self.path, "r:*") as tar:
                for member in tar:
                    if member.isreg() and member.name in wanted:
                        fh = tar.extractfile(member)
                        if fh is not None:
                            with fh:
                                yield member.name, fh
        except _BROKEN as exc:
            raise FetchError(CORRUPT, f"{self.path.name}: unreadable archive ({exc})") from None

    def extract(self, files: Mapping[str, Path]) -> None:
        """Write members (name -> destination) through temp files renamed into place."""
        for name, fh in self.stream(set(files)):
            copy_atomic(fh, files[name])


def copy_atomic(source: IO[bytes], target: Path) -> Path:
    """Copy a stream to ``target`` via ``target.part``; a crash never leaves a partial target."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        with open(part, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
    except _BROKEN as exc:
        part.unlink(missing_ok=True)
        raise FetchError(CORRUPT, f"{target.name}: unreadable archive member ({exc})") from None
    os.replace(part, target)
    return target


def _zip_is_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)
