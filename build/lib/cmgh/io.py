"""Atomic file writes, safe path components and masked secrets: results are never left half-written,
never name a path outside their folder and never hold a password."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from cmgh.errors import DataError

_UMASK = os.umask(0o022)
os.umask(_UMASK)
# A leading '-' or '_' is allowed: about 1 in 32 real YouTube IDs starts with one (`--PJHxphWEs`),
# and IDs only ever become the last component of a path under a dataset folder or a URL query
# value, never a command-line argument of their own. A leading '.' (hidden/relative) is not.
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.=-]{0,199}$")


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it over the target on success only."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are as shareable as any file
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def sweep_debris(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temp files :func:`atomic_path` left in ``folder`` when its process was killed (a kill -9
    runs no ``finally``); call it where one process owns the folder (a workflow job's output)."""
    folder = Path(folder)
    debris = [p for p in folder.glob(".*.tmp") if p.is_file()] if folder.is_dir() else []
    for path in debris:
        path.unlink(missing_ok=True)
    return debris


def atomic_write(target: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Write through ``write(fh)`` into a temp file, fsync, then rename onto ``target``."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(target)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(target, lambda fh: fh.write(text.encode("utf-8")))


def atomic_write_json(target: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def json_digest(obj: Any, length: int = 64) -> str:
    """Hex SHA-256 of ``obj`` as sorted-key JSON (paths and numbers stringified): the one way a
    config slice, a shard's inputs or a cache key becomes a stable name."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:length]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is safe as a single path component; raise DataError otherwise.

    Dataset IDs (YouTube IDs, video names) come from downloaded annotation files and must never
    steer a path out of its folder ('..', '/', NUL, a leading dot).
    """
    text = str(value)
    if not _SAFE_ID.match(text) or ".." in text:
        raise DataError(f"{what} {text!r} is not a safe file name (expected letters, digits, '_', '-', '.', '=')")
    return text


def sanitize_id(value: str) -> str:
    """Map an arbitrary ID to a safe path component (reversible enough for humans, never escaping)."""
    text = re.sub(r"[^A-Za-z0-9_.=-]", "_", str(value)).replace("..", "__")
    if not text or not text[0].isalnum():
        text = "x" + text
    return text[:200]


MASK = "***"
# scheme://user:password@host (the password runs to the authority's last '@') and ?password=... parameters
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:]*):(?P<secret>[^\s/?#]*)@")
_QUERY_SECRET = re.compile(r"(?P<head>[?&;](?:password|passwd|pwd|secret|token|access_token|api_key|apikey)=)(?P<secret>[^&;#\s'\"]*)", re.I)


def redacted(text: str) -> str:
    """``text`` with the password of every URL in it masked (``postgresql://user:***@host/db``,
    ``?password=***``): the one masking of store URIs in written configs, logs, messages and tags."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", str(text))
    return _QUERY_SECRET.sub(lambda m: f"{m['head']}{MASK}", text)


def is_masked(text: str) -> bool:
    """Whether ``text`` holds a password :func:`redacted` masked (a URI read back from a written config)."""
    return any(m["secret"] == MASK for pattern in (_URL_PASSWORD, _QUERY_SECRET) for m in pattern.finditer(str(text)))
