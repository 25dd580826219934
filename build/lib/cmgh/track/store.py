"""Reaching a tracking store before a run opens: is a server up at all, and one process at a time
creating a sqlite store (no mlflow import: the CLI asks before it loads the adapter)."""

from __future__ import annotations

import base64
import contextlib
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cmgh.track.uri import sqlite_path


SQLITE_HEADER = b"SQLite format 3\x00"


def unreadable_sqlite(db: Path) -> str | None:
    """Why the sqlite file ``db`` is no tracking store to read (None when it is one). Read-only
    checks: asking never creates, migrates or writes a store (an empty file stays empty)."""
    try:
        with open(db, "rb") as fh:
            header = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if not header:
        return "is empty (0 bytes), not a tracking store"
    if header != SQLITE_HEADER:
        return "is not a sqlite database"
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as con:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            con.execute("PRAGMA quick_check").fetchone()
    except sqlite3.DatabaseError as exc:
        return f"is a damaged sqlite database ({exc})"
    return None if {"runs", "experiments"} <= tables else "is a sqlite database without MLflow's tables"


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def server_reachable(uri: str, timeout: float = 5.0) -> bool:
    """Whether an MLflow server answers at all (any HTTP status counts); no retries, short timeout.
    Credentials in the URI (``http://user:password@host``) go in a Basic header, as MLflow sends them."""
    parts = urllib.parse.urlsplit(uri)
    userinfo, _, host = parts.netloc.rpartition("@")
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=host)).rstrip("/") + "/health")
    if userinfo:
        request.add_header("Authorization", "Basic " + base64.b64encode(urllib.parse.unquote(userinfo).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialize opening a sqlite store across processes: parallel jobs that create (migrate) a
    fresh store at the same moment leave it broken (``_alembic_tmp_* already exists``)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        fcntl = None  # type: ignore[assignment]
    db = sqlite_path(uri)
    if fcntl is None or db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
