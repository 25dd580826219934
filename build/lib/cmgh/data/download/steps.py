"""The steps of one dataset's download, each resumable: annotation files, then clips.

Clips come from a video site (a bounded thread pool: memory stays flat for a million clips) or
from members of archives. Every outcome is recorded in the manifest as it happens; finished files
carry their final names, unfinished ones live in the dataset's staging folder.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tqdm import tqdm

from cmgh import layout
from cmgh.data.datasets import download_list as plan
from cmgh.data.download import autocaptions, checks, child
from cmgh.data.download import clips as clipmod
from cmgh.data.download.archives import Archive, copy_atomic
from cmgh.data.datasets.items import INVALID_ID
from cmgh.data.download.fetch import (
    CORRUPT,
    ERROR,
    OK,
    PERMANENT,
    UNAVAILABLE,
    Deadline,
    Fetched,
    FetchError,
    Interrupted,
    Policy,
    RateLimiter,
    fetch,
    retrying,
)
from cmgh.data.download.manifest import Manifest, Row
from cmgh.data.download.sources import annotation_id, archive_name, clip_url, local_paths
from cmgh.errors import DownloadError
from cmgh.io import sanitize_id, sha256_file

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Context:
    """Everything one dataset's download needs, shared by the worker threads."""

    name: str
    root: Path
    spec: dict[str, Any]
    dl: Any
    policy: Policy
    limiter: RateLimiter
    manifest: Manifest
    stop: threading.Event = field(default_factory=threading.Event)
    ytdlp: dict[str, Any] = field(default_factory=dict)

    @property
    def staging(self) -> Path:
        return self.root / layout.DOWNLOAD_STAGING

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


# --------------------------------------------------------------------------------------------
# annotations and archives


def fetch_or_reuse(ctx: Context, url: str, sha256: str | None) -> Fetched:
    """An archive in staging (kept by an interrupted run: it is only there once verified), or fetch it."""
    path = ctx.staging / archive_name(url)
    if path.is_file():
        digest = sha256_file(path)
        if not sha256 or digest == sha256.lower():
            return Fetched(path, path.stat().st_size, digest)
        path.unlink()  # fetched under another expected checksum: fetch it again
    return fetch(url, path, sha256, policy=ctx.policy, limiter=ctx.limiter, stop=ctx.stop)


def _drop_archive(ctx: Context, path: Path) -> None:
    if not ctx.dl.keep_archives:
        path.unlink(missing_ok=True)


def _annotation(ctx: Context, source: dict[str, Any]) -> Row:
    """One annotation source: fetched (or its archive's members taken) into staging, each file
    checked by its reader (:mod:`checks`), and only then moved to its name in the layout."""
    url, sha256 = source["url"], source.get("sha256")
    locals_ = local_paths(source)
    item_id = annotation_id(source)
    previous = ctx.manifest.get("annotation", item_id)
    if all((ctx.root / p).is_file() for p in locals_):
        if previous is not None and previous.status == OK:
            return previous
        for rel in locals_:  # not put there by a download (checked before it lands): checked, never replaced
            try:
                checks.check(ctx.name, rel, ctx.root / rel)
            except FetchError as exc:
                raise FetchError(CORRUPT, f"{exc.reason}; it was already in {ctx.root}, not fetched: fix or remove it") from None
        first = ctx.root / locals_[0]
        return Row("annotation", item_id, url, ",".join(locals_), OK, "", first.stat().st_size, sha256_file(first))
    got = fetch_or_reuse(ctx, url, sha256)
    staged: dict[str, Path] = {}
    try:
        if source.get("save_as"):
            staged[locals_[0]] = got.path
        else:
            with Archive(got.path) as archive:
                chosen: dict[str, Path] = {}
                for pattern, local in source["members"].items():
                    names = archive.select(pattern)
                    if len(names) != 1:
                        raise FetchError(UNAVAILABLE if not names else ERROR, f"{urlsplit(url).path}: {len(names)} members match {pattern!r}, expected exactly one")
                    chosen[names[0]] = staged[local] = ctx.staging / f"{got.path.name}.{sanitize_id(local)}.tmp"
                archive.extract(chosen)
        for local, path in staged.items():
            checks.check(ctx.name, local, path)
    except FetchError:
        for path in (*staged.values(), got.path):  # unsafe, broken or not what was asked: the next run fetches it anew
            path.unlink(missing_ok=True)
        raise
    for local, path in staged.items():
        (ctx.root / local).parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, ctx.root / local)
    if not source.get("save_as"):
        _drop_archive(ctx, got.path)
    return Row("annotation", item_id, url, ",".join(locals_), OK, "", got.bytes, got.sha256)


def fetch_annotations(ctx: Context) -> None:
    for source in ctx.spec["annotations"]:
        try:
            row = _annotation(ctx, source)
        except FetchError as exc:
            ctx.manifest.record(Row("annotation", annotation_id(source), source["url"], ",".join(local_paths(source)), exc.status, exc.reason))
            raise DownloadError(f"{ctx.name}: annotation {source['url']}: {exc.status} ({exc.reason})") from None
        ctx.manifest.record(row)


# --------------------------------------------------------------------------------------------
# clips


def clip_state(ctx: Context, clip: plan.Clip, retry_all: bool) -> str:
    """``invalid id``, ``lookup`` (a pseudo id to look up first), ``present`` (file in place),
    ``skip`` (failed for good earlier, or its lookup did) or ``fetch``."""
    if clip.target is None:
        if not clip.needs_lookup:
            return INVALID_ID
        row = ctx.manifest.get("lookup", clip.item_id)
        return "skip" if row is not None and row.status in PERMANENT and not retry_all else "lookup"
    if clip.target.is_file():
        return "present"
    row = ctx.manifest.get("clip", clip.item_id)
    return "skip" if row is not None and row.status in PERMANENT and not retry_all else "fetch"


def pending(ctx: Context, clips: Sequence[plan.Clip], retry_all: bool) -> list[plan.Clip]:
    """Clips still to fetch. Recorded here: invalid IDs, pseudo ids whose lookup failed (with the
    lookup's status and reason), and finished clips not yet recorded ``ok``."""
    todo = []
    for clip in clips:
        state = clip_state(ctx, clip, retry_all)
        row = ctx.manifest.get("clip", clip.item_id)
        if clip.needs_lookup:
            lookup = ctx.manifest.get("lookup", clip.item_id)
            if lookup is not None and lookup.status != OK:
                ctx.manifest.record(Row("clip", clip.item_id, lookup.url, "", lookup.status, lookup.error))
            else:
                ctx.manifest.record(Row("clip", clip.item_id, "", "", ERROR, f"{clip.error}; a re-run looks it up"))
        elif state == INVALID_ID:
            ctx.manifest.record(Row("clip", clip.item_id, "", "", INVALID_ID, clip.error))
        elif state == "present" and clip.target is not None and (row is None or row.status != OK or row.path != ctx.rel(clip.target)):
            size = clip.target.stat().st_size
            ctx.manifest.record(Row("clip", clip.item_id, row.url if row else "", ctx.rel(clip.target), OK, "", size, sha256_file(clip.target)))
        elif state == "fetch":
            todo.append(clip)
    return todo


def _install(ctx: Context, clip: plan.Clip, source: Path, deadline: Deadline) -> tuple[int, str]:
    """Cut or re-encode ``source`` as asked, check it decodes, then give it its final name."""
    assert clip.target is not None
    fps, short_side = ctx.dl.reencode.fps, ctx.dl.reencode.short_side
    tmp = ctx.staging / f"{sanitize_id(clip.item_id)}.cut.tmp"
    try:
        if clip.start is None and fps is None and short_side is None and clipmod.is_plain_mp4(source):
            os.replace(source, tmp)  # already what the readers take: keep the bytes
        else:
            clipmod.cut(source, tmp, clip.start or 0.0, clip.end, fps, short_side, deadline)
        clipmod.check_clip(tmp)
        size, digest = tmp.stat().st_size, sha256_file(tmp)
        clip.target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, clip.target)
    except FetchError as exc:
        if exc.status == CORRUPT:
            source.unlink(missing_ok=True)  # a re-run downloads it again
        raise
    finally:
        tmp.unlink(missing_ok=True)
    source.unlink(missing_ok=True)
    return size, digest


def _site_clip(ctx: Context, clip: plan.Clip) -> Row:
    """One clip from a video site: fetch (with retries; with its captions when the dataset has
    ``caption_langs``), store the captions, cut, check, install."""
    assert clip.target is not None
    url = clip_url(ctx.spec["clip_url"], clip.source_id)
    deadline = Deadline(ctx.policy.item_timeout, ctx.stop)
    rel = ctx.rel(clip.target)
    langs = ctx.spec.get("caption_langs") or []
    note = ""
    try:
        stem = sanitize_id(clip.item_id)
        if langs:
            source, failed = autocaptions.fetch_with_captions(url, ctx.staging, stem, ctx.ytdlp, langs, ctx.policy, deadline, ctx.limiter, ctx.stop)
            stored = autocaptions.store(ctx.root, ctx.staging, stem, clip.target.stem, langs)  # before the video is in place
            note = failed or stored
        else:
            source = retrying(lambda: clipmod.fetch_video(url, ctx.staging, stem, ctx.ytdlp, deadline, ctx.limiter), ctx.policy, url, ctx.stop)
        size, digest = _install(ctx, clip, source, deadline)
    except FetchError as exc:
        log.info("%s %s: %s", ctx.name, clip.item_id, exc)
        return Row("clip", clip.item_id, url, rel, exc.status, exc.reason)
    except Interrupted:
        raise
    except Exception as exc:  # one odd clip in a million must not end a days-long run: record it
        log.exception("%s %s: unexpected failure", ctx.name, clip.item_id)
        return Row("clip", clip.item_id, url, rel, ERROR, f"{exc.__class__.__name__}: {exc}")
    return Row("clip", clip.item_id, url, rel, OK, note, size, digest)


def _progress(total: int | None, name: str, show: bool, unit: str) -> tqdm:
    return tqdm(total=total, desc=f"download {name}", unit=unit, disable=not (show and sys.stderr.isatty()))


def pooled(
    ctx: Context,
    items: Iterable[T],
    work: Callable[[Context, T], Row | None],
    workers: int,
    show: bool,
    unit: str = "clip",
    total: int | None = None,
) -> None:
    """``work`` on every item through a bounded thread pool, each returned row recorded as it comes.

    At most ``2 * workers`` items are in flight and ``items`` is consumed lazily, so memory stays
    flat for millions of items. Ctrl-C stops the workers between chunks (their .part files stay
    resumable) and ends the run with KeyboardInterrupt.
    """
    pending = iter(items)
    running: set[Future[Row | None]] = set()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"dl-{ctx.name}") as pool, _progress(total, ctx.name, show, unit) as bar:
        try:
            while True:
                while len(running) < 2 * workers and not ctx.stop.is_set():
                    item = next(pending, None)
                    if item is None:
                        break
                    running.add(pool.submit(work, ctx, item))
                if not running:
                    return
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    row = future.result()
                    if row is not None:
                        ctx.manifest.record(row)
                    bar.update(1)
        except (KeyboardInterrupt, Interrupted):
            ctx.stop.set()
            raise KeyboardInterrupt from None


def from_sites(ctx: Context, todo: Sequence[plan.Clip], workers: int, show: bool) -> None:
    """Clips from a video site, through the bounded thread pool (and its yt-dlp worker processes)."""
    try:
        pooled(ctx, todo, _site_clip, workers, show, "clip", len(todo))
    finally:
        child.close_all()


def from_archives(ctx: Context, todo: Sequence[plan.Clip]) -> None:
    """Clips that are members of archives, matched by file name, each checked before install."""
    wanted = {clip.target.name: clip for clip in todo if clip.target is not None}
    failure: FetchError | None = None
    for source in ctx.spec["clip_archives"]:
        if not wanted:
            break
        url = source["url"]
        try:
            got = fetch_or_reuse(ctx, url, source.get("sha256"))
            ctx.manifest.record(Row("archive", archive_name(url), url, "", OK, "", got.bytes, got.sha256))
            with Archive(got.path) as archive:
                members: dict[str, plan.Clip] = {}
                taken: set[str] = set()
                for name in archive.files:  # the first member with a clip's file name provides it
                    clip = wanted.get(PurePosixPath(name).name)
                    if clip is not None and clip.item_id not in taken:
                        members[name] = clip
                        taken.add(clip.item_id)
                for member, fh in archive.stream(set(members)):
                    if ctx.stop.is_set():
                        raise KeyboardInterrupt
                    clip = members[member]
                    assert clip.target is not None
                    row_url, rel = f"{url}#{member}", ctx.rel(clip.target)
                    try:
                        extracted = copy_atomic(fh, ctx.staging / f"{sanitize_id(clip.item_id)}.member.tmp")
                        size, digest = _install(ctx, clip, extracted, Deadline(ctx.policy.item_timeout, ctx.stop))
                        ctx.manifest.record(Row("clip", clip.item_id, row_url, rel, OK, "", size, digest))
                    except FetchError as exc:
                        ctx.manifest.record(Row("clip", clip.item_id, row_url, rel, exc.status, exc.reason))
                    wanted.pop(clip.target.name)
            _drop_archive(ctx, got.path)
        except FetchError as exc:
            failure = exc
            ctx.manifest.record(Row("archive", archive_name(url), url, "", exc.status, exc.reason))
            (ctx.staging / archive_name(url)).unlink(missing_ok=True)  # unsafe or broken: fetch anew next time
    for clip in wanted.values():
        assert clip.target is not None
        status, reason = (failure.status, failure.reason) if failure else (UNAVAILABLE, f"not in any of data.download.{ctx.name}.clip_archives")
        ctx.manifest.record(Row("clip", clip.item_id, "", ctx.rel(clip.target), status, reason))
