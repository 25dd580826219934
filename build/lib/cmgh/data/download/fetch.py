"""HTTP downloads that survive the real world: resume, retries, politeness, checksums.

A file is fetched into ``<target>.part``. A dropped connection or a killed process leaves the
bytes there and the next attempt asks for the rest with a ``Range`` request; the finished bytes
are checked against the expected SHA-256 or MD5 (YouTube-8M publishes MD5s) and only then
renamed to the target, so a file under its final name is always complete. Every failure is a :class:`FetchError` carrying one of the
manifest statuses below; the transient ones are retried with exponential backoff.

Two clocks bound every item, and neither waits for a chunk to arrive: the item's time limit
(:class:`Deadline`) and the request's (:class:`Progress`: each :data:`PROGRESS_BYTES` must arrive
within ``timeout`` seconds of the previous ones, so a server that trickles a byte now and then
is as stalled as a silent one). Bodies are read with ``read1`` (whatever the socket holds), so
both clocks are looked at after every receive, not after every 64 KiB.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import requests
import urllib3

from cmgh.data.datasets.items import INVALID_ID

log = logging.getLogger(__name__)
T = TypeVar("T")

# Manifest statuses, one per cause a user can act on.
OK = "ok"
UNAVAILABLE = "unavailable"  # 404/410, video removed, member missing from its archive
PRIVATE = "private"  # 401/403, private or sign-in-only video
TIMEOUT = "timeout"  # stalled connection or item time limit
CORRUPT = "corrupt"  # not decodable, or the window is not in the video
CHECKSUM = "checksum mismatch"
UNSAFE = "unsafe archive"  # an archive member would land outside its folder
UNSAFE_URL = "unsafe url"  # a redirect or link to file://, ftp:// or no URL at all: never fetched
RATE_LIMITED = "rate limited"  # 429, "confirm you're not a bot"
SERVER = "server error"  # 5xx
NETWORK = "network error"  # refused, reset, dropped mid-body
ERROR = "error"  # anything else
TRANSIENT = frozenset({TIMEOUT, RATE_LIMITED, SERVER, NETWORK, ERROR})  # worth retrying within a run
PERMANENT = frozenset({UNAVAILABLE, PRIVATE, INVALID_ID, UNSAFE, UNSAFE_URL})  # not retried by a re-run (unless asked)
STATUSES = (OK, UNAVAILABLE, PRIVATE, TIMEOUT, CORRUPT, CHECKSUM, INVALID_ID, UNSAFE, UNSAFE_URL, RATE_LIMITED, SERVER, NETWORK, ERROR)
USER_AGENT = "cmgh-download/0.1 (research dataset fetcher)"
BACKOFF_CAP = 300.0
PROGRESS_BYTES = 1 << 16  # what a request must deliver per ``timeout`` (about 1 KiB/s at the default 60 s)


class FetchError(Exception):
    """One item failed; ``status`` is its manifest status, ``retry`` whether trying again may help."""

    def __init__(self, status: str, reason: str, retry: bool | None = None) -> None:
        super().__init__(f"{status}: {reason}")
        self.status, self.reason = status, " ".join(str(reason).split())[:300]
        self.retry = status in TRANSIENT if retry is None else retry


class Interrupted(Exception):
    """The run is stopping (Ctrl-C): unwind without recording the item as failed."""


def status_for_http(code: int) -> str:
    if code in (404, 410):
        return UNAVAILABLE
    if code in (401, 403):
        return PRIVATE
    if code == 429:
        return RATE_LIMITED
    if code in (408, 504):
        return TIMEOUT
    return SERVER if code >= 500 else ERROR


@dataclass(frozen=True)
class Policy:
    """How hard and how politely to try one item."""

    retries: int = 3
    backoff: float = 2.0  # seconds before the first retry, doubled on each further one
    timeout: float = 60.0  # seconds a request may take to deliver PROGRESS_BYTES (silent or trickling)
    item_timeout: float | None = None  # seconds for the whole item (None: no limit)
    chunk_size: int = 1 << 16  # what a dropped connection can lose of the bytes it carried

    @classmethod
    def from_config(cls, dl: Any) -> Policy:
        return cls(int(dl.retries), float(dl.backoff_seconds), float(dl.timeout_seconds), dl.item_timeout_seconds)


class RateLimiter:
    """At most ``rate`` request starts per second across all threads (0: unlimited)."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event | None = None) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        pause(start - now, stop)


class Deadline:
    """The item's time limit and the run's stop flag, checked after every receive (and every frame of a cut)."""

    def __init__(self, seconds: float | None, stop: threading.Event | None = None) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds if seconds else None
        self.stop = stop

    def check(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise Interrupted()
        if self.end is not None and time.monotonic() > self.end:
            raise FetchError(TIMEOUT, f"item took longer than {self.seconds:g} s", retry=False)

    def remaining(self, cap: float) -> float:
        """Seconds left of the item, at most ``cap`` (and at least a little: a socket needs a positive timeout)."""
        return cap if self.end is None else max(min(cap, self.end - time.monotonic()), 0.01)


class Progress:
    """The request's own deadline: every :data:`PROGRESS_BYTES` within ``seconds`` of the previous ones.

    Measured on the monotonic clock, whether or not a chunk arrives: a request whose server
    sends nothing, or one byte now and then, fails after ``seconds``.
    """

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds, self.what = seconds, what
        self.mark, self.since = 0, time.monotonic()

    def update(self, total: int) -> None:
        if total - self.mark >= PROGRESS_BYTES:
            self.mark, self.since = total, time.monotonic()

    def check(self) -> None:
        if time.monotonic() - self.since > self.seconds:
            raise FetchError(TIMEOUT, f"request timeout: fewer than {PROGRESS_BYTES >> 10} KiB in {self.seconds:g} s from {self.what} (stalled or trickling)")


def retrying(call: Callable[[], T], policy: Policy, what: str, stop: threading.Event | None = None) -> T:
    """``call()`` until it succeeds, a permanent failure, or ``policy.retries`` retries with backoff."""
    for attempt in range(policy.retries + 1):
        try:
            return call()
        except FetchError as exc:
            if not exc.retry or attempt == policy.retries:
                raise
            delay = min(policy.backoff * 2**attempt, BACKOFF_CAP)
            log.info("%s: %s; retry %d/%d in %.1f s", what, exc, attempt + 1, policy.retries, delay)
            pause(delay, stop)
    raise AssertionError("unreachable")


def pause(seconds: float, stop: threading.Event | None = None) -> None:
    """Sleep, but wake up and raise :class:`Interrupted` as soon as the run is stopping."""
    if seconds <= 0:
        return
    if stop is None:
        time.sleep(seconds)
    elif stop.wait(seconds):
        raise Interrupted()


@dataclass(frozen=True)
class Fetched:
    path: Path
    bytes: int
    sha256: str


def digests(path: Path, algorithms: tuple[str, ...]) -> dict[str, str]:
    """Hex digests of a file under each hashlib algorithm, in one read."""
    hashes = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            for h in hashes.values():
                h.update(block)
    return {name: h.hexdigest() for name, h in hashes.items()}


def mismatch(path: Path, expected: dict[str, str | None]) -> tuple[dict[str, str], str | None]:
    """The file's digests (SHA-256 always, for the manifest) and the first expected one it fails."""
    wanted = {name: value.lower() for name, value in expected.items() if value}
    got = digests(path, tuple(dict.fromkeys(("sha256", *wanted))))
    bad = next((name for name, value in wanted.items() if got[name] != value), None)
    return got, bad


_local = threading.local()


def _session() -> requests.Session:
    """One connection pool per thread (requests sessions are not thread-safe)."""
    if not hasattr(_local, "session"):
        session = requests.Session()
        # identity: byte offsets of a Range request must be offsets in the file, not in a gzip stream
        session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        _local.session = session
    return _local.session


_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """``(first byte, total size)`` of a Content-Range header (None where absent)."""
    match = _CONTENT_RANGE.match(header or "")
    if not match:
        return None, None
    first, total = match.groups()
    return (int(first) if first else None), (int(total) if total and total != "*" else None)


@contextmanager
def _request_errors(url: str, policy: Policy, received: Callable[[], int]) -> Iterator[None]:
    """requests' (and, reading the body, urllib3's) exceptions as a FetchError with its manifest status."""
    try:
        yield
    except (requests.Timeout, urllib3.exceptions.TimeoutError) as exc:
        raise FetchError(TIMEOUT, f"no data for {policy.timeout:g} s from {url} ({exc.__class__.__name__})") from None
    except (requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as exc:
        # a redirect (or a link) to file://, ftp:// or garbage: never fetched, and not a network fault
        raise FetchError(UNSAFE_URL, f"{url} led to a URL cmgh does not fetch ({str(exc).splitlines()[0][:200]}); expected http or https") from None
    except requests.ConnectionError as exc:
        status = TIMEOUT if "timed out" in str(exc).lower() else NETWORK
        raise FetchError(status, f"connection lost after {received()} bytes of {url} ({exc.__class__.__name__})") from None
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        # ChunkedEncodingError, ProtocolError & co: the body ended early; the bytes so far stay in the part file
        raise FetchError(NETWORK, f"connection dropped after {received()} bytes of {url} ({exc.__class__.__name__})") from None


def _open(url: str, policy: Policy, deadline: Deadline, headers: dict[str, str] | None = None) -> requests.Response:
    """A streamed GET whose socket waits no longer than the request's or the item's time left."""
    wait = deadline.remaining(policy.timeout)
    return _session().get(url, headers=headers or {}, stream=True, timeout=(wait, wait))


def _body(resp: requests.Response, url: str, policy: Policy, deadline: Deadline) -> Iterator[bytes]:
    """The body as it arrives, both clocks checked after every receive (see the module docstring)."""
    progress, total = Progress(policy.timeout, url), 0
    while True:
        chunk = resp.raw.read1(policy.chunk_size, decode_content=True)
        if not chunk:
            return
        total += len(chunk)
        progress.update(total)
        yield chunk
        deadline.check()
        progress.check()


def _check_status(resp: requests.Response, url: str) -> None:
    if resp.status_code >= 400:
        raise FetchError(status_for_http(resp.status_code), f"HTTP {resp.status_code} {resp.reason} for {url}")


def _get(url: str, part: Path, policy: Policy, deadline: Deadline, limiter: RateLimiter | None) -> bool:
    """One GET into ``part``, continuing what is there; returns whether it resumed."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    if limiter is not None:
        limiter.wait(deadline.stop)
    deadline.check()
    received = 0
    with _request_errors(url, policy, lambda: received), _open(url, policy, deadline, headers) as resp:
        if resp.status_code == 416 and offset:
            if _content_range(resp.headers.get("Content-Range"))[1] == offset:
                return True  # the part already holds the whole file
            part.unlink()
            raise FetchError(NETWORK, f"server refused to resume at byte {offset}; restarting")
        _check_status(resp, url)
        resumed = bool(offset) and resp.status_code == 206 and _content_range(resp.headers.get("Content-Range"))[0] == offset
        with open(part, "ab" if resumed else "wb") as fh:
            for chunk in _body(resp, url, policy, deadline):
                fh.write(chunk)
                received += len(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        return resumed


def get_text(url: str, *, policy: Policy, limiter: RateLimiter | None = None, stop: threading.Event | None = None, limit: int = 1 << 16) -> str:
    """A short text answer in one GET (retried as :func:`fetch` retries), nothing written: one
    id lookup. More than ``limit`` bytes or non-UTF-8 bytes are ``corrupt``."""
    deadline = Deadline(policy.item_timeout, stop)

    def once() -> str:
        if limiter is not None:
            limiter.wait(stop)
        deadline.check()
        body = bytearray()
        with _request_errors(url, policy, lambda: len(body)), _open(url, policy, deadline) as resp:
            _check_status(resp, url)
            for chunk in _body(resp, url, policy, deadline):
                body += chunk
                if len(body) > limit:
                    raise FetchError(CORRUPT, f"{url}: more than {limit} bytes, expected a short text answer")
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise FetchError(CORRUPT, f"{url}: the answer is not UTF-8 text") from None

    return retrying(once, policy, url, stop)


def fetch(
    url: str,
    target: str | os.PathLike[str],
    sha256: str | None = None,
    *,
    md5: str | None = None,
    policy: Policy,
    limiter: RateLimiter | None = None,
    stop: threading.Event | None = None,
) -> Fetched:
    """Download ``url`` to ``target`` (resuming ``target.part``), verify ``sha256``/``md5``, then rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    deadline = Deadline(policy.item_timeout, stop)
    expected = {"sha256": sha256, "md5": md5}
    fresh_retry = True
    while True:
        resumed = retrying(lambda: _get(url, part, policy, deadline, limiter), policy, url, stop)
        got, bad = mismatch(part, expected)
        if bad is not None:
            part.unlink()
            if resumed and fresh_retry:  # the server's file may have changed under the resume
                fresh_retry = False
                log.info("%s: checksum mismatch after resuming; downloading again from scratch", url)
                continue
            raise FetchError(CHECKSUM, f"{bad} of {url} is {got[bad]}, expected {str(expected[bad]).lower()}")
        size = part.stat().st_size
        os.replace(part, target)
        return Fetched(target, size, got["sha256"])
