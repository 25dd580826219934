"""``cmgh data download``: one real dataset from its configured sources into its layout.

Order: the annotation files (plain, or members of archives), then the clips they name (video-site
IDs through yt-dlp, or members of clip archives), then the manifest, the summary and, when enough
clips are available, the ``.complete`` stamp the workflow waits for. Every step is resumable:
finished files carry their final names, unfinished ones live under ``<dataset>/.download/``
(``.part`` files that the next run continues), and a re-run fetches only what is missing.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
from tqdm import tqdm

from cmgh.data import formats
from cmgh.data.download import clips as clipmod
from cmgh.data.download import plan
from cmgh.data.download.archives import Archive, copy_atomic
from cmgh.data.download.fetch import (
    CORRUPT,
    ERROR,
    INVALID_ID,
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
from cmgh.data.download.manifest import STAGING, Manifest, Row, summary, write_summary
from cmgh.data.download.sources import annotation_id, archive_name, check_sources, clip_url, local_paths
from cmgh.errors import DataError, DownloadError
from cmgh.io import atomic_write_json, sanitize_id, sha256_file

log = logging.getLogger(__name__)
STAMP = ".complete"  # the same stamp the generator writes: the workflow's `download` output


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
        return self.root / STAGING

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


@dataclass(frozen=True)
class Report:
    name: str
    root: Path
    summary: pd.DataFrame
    selected: int
    available: int
    min_available: float
    complete: bool

    @property
    def fraction(self) -> float:
        return self.available / self.selected if self.selected else 0.0

    def text(self) -> str:
        head = f"{self.name}: {self.available} of {self.selected} clips available ({100 * self.fraction:.1f} %, minimum {100 * self.min_available:.0f} %)"
        table = self.summary.to_string(index=False) if not self.summary.empty else "(nothing recorded)"
        return f"{head}\n{table}\nmanifest: {self.root / 'download_manifest.csv'}"


# --------------------------------------------------------------------------------------------
# annotations and archives


def _fetch_or_reuse(ctx: Context, url: str, sha256: str | None) -> Fetched:
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
    url, sha256 = source["url"], source.get("sha256")
    locals_ = local_paths(source)
    item_id = annotation_id(source)
    previous = ctx.manifest.get("annotation", item_id)
    if all((ctx.root / p).is_file() for p in locals_):
        if previous is not None and previous.status == OK:
            return previous
        first = ctx.root / locals_[0]
        return Row("annotation", item_id, url, ",".join(locals_), OK, "", first.stat().st_size, sha256_file(first))
    if source.get("save_as"):
        got = fetch(url, ctx.root / locals_[0], sha256, policy=ctx.policy, limiter=ctx.limiter, stop=ctx.stop)
        return Row("annotation", item_id, url, locals_[0], OK, "", got.bytes, got.sha256)
    got = _fetch_or_reuse(ctx, url, sha256)
    try:
        with Archive(got.path) as archive:
            chosen: dict[str, Path] = {}
            for pattern, local in source["members"].items():
                names = archive.select(pattern)
                if len(names) != 1:
                    raise FetchError(UNAVAILABLE if not names else ERROR, f"{urlsplit(url).path}: {len(names)} members match {pattern!r}, expected exactly one")
                chosen[names[0]] = ctx.root / local
            archive.extract(chosen)
    except FetchError:
        got.path.unlink(missing_ok=True)  # unsafe or broken: the next run fetches it anew
        raise
    _drop_archive(ctx, got.path)
    return Row("annotation", item_id, url, ",".join(locals_), OK, "", got.bytes, got.sha256)


def _annotations(ctx: Context) -> None:
    for source in ctx.spec["annotations"]:
        try:
            row = _annotation(ctx, source)
        except FetchError as exc:
            ctx.manifest.record(Row("annotation", annotation_id(source), source["url"], ",".join(local_paths(source)), exc.status, exc.reason))
            raise DownloadError(f"{ctx.name}: annotation {source['url']}: {exc.status} ({exc.reason})") from None
        ctx.manifest.record(row)


# --------------------------------------------------------------------------------------------
# clips


def _state(ctx: Context, clip: plan.Clip, retry_all: bool) -> str:
    """``invalid id``, ``present`` (file in place), ``skip`` (failed for good earlier) or ``fetch``."""
    if clip.target is None:
        return INVALID_ID
    if clip.target.is_file():
        return "present"
    row = ctx.manifest.get("clip", clip.item_id)
    return "skip" if row is not None and row.status in PERMANENT and not retry_all else "fetch"


def _pending(ctx: Context, clips: Sequence[plan.Clip], retry_all: bool) -> list[plan.Clip]:
    """Clips still to fetch; invalid IDs and finished clips not yet recorded ``ok`` are recorded."""
    todo = []
    for clip in clips:
        state = _state(ctx, clip, retry_all)
        row = ctx.manifest.get("clip", clip.item_id)
        if state == INVALID_ID:
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
    """One clip from a video site: fetch (with retries), cut, check, install."""
    assert clip.target is not None
    url = clip_url(ctx.spec["clip_url"], clip.source_id)
    deadline = Deadline(ctx.policy.item_timeout, ctx.stop)
    rel = ctx.rel(clip.target)
    try:
        stem = sanitize_id(clip.item_id)
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
    return Row("clip", clip.item_id, url, rel, OK, "", size, digest)


def _progress(total: int, name: str, show: bool) -> tqdm:
    return tqdm(total=total, desc=f"download {name}", unit="clip", disable=not (show and sys.stderr.isatty()))


def _from_sites(ctx: Context, todo: Sequence[plan.Clip], workers: int, show: bool) -> None:
    """Clips through a bounded thread pool (memory stays flat for a million clips)."""
    pending = iter(todo)
    running: set[Future[Row]] = set()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"dl-{ctx.name}") as pool, _progress(len(todo), ctx.name, show) as bar:
        try:
            while True:
                while len(running) < 2 * workers and not ctx.stop.is_set():
                    clip = next(pending, None)
                    if clip is None:
                        break
                    running.add(pool.submit(_site_clip, ctx, clip))
                if not running:
                    return
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    ctx.manifest.record(future.result())
                    bar.update(1)
        except (KeyboardInterrupt, Interrupted):
            ctx.stop.set()  # workers notice between chunks; their .part files stay resumable
            raise KeyboardInterrupt from None


def _from_archives(ctx: Context, todo: Sequence[plan.Clip]) -> None:
    """Clips that are members of archives, matched by file name, each checked before install."""
    wanted = {clip.target.name: clip for clip in todo if clip.target is not None}
    failure: FetchError | None = None
    for source in ctx.spec["clip_archives"]:
        if not wanted:
            break
        url = source["url"]
        try:
            got = _fetch_or_reuse(ctx, url, source.get("sha256"))
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


# --------------------------------------------------------------------------------------------
# driver


@contextmanager
def _exclusive(ctx: Context) -> Iterator[None]:
    """One download per dataset folder at a time (two would race on the same part files)."""
    ctx.staging.mkdir(parents=True, exist_ok=True)
    with open(ctx.staging / "lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DownloadError(f"{ctx.root}: another `cmgh data download` is working on this dataset") from None
        for pattern in ("*.tmp", "*.tmp.part"):  # half-written cuts and members of a killed run; downloads' .part files stay
            for leftover in ctx.staging.glob(pattern):
                leftover.unlink()
        yield


def _dry_run(ctx: Context, classes: Sequence[str], limit: int | None, retry_all: bool, echo: Callable[[str], None]) -> Report:
    echo(f"{ctx.name}: dry run, nothing is fetched or written (dataset folder {ctx.root})")
    missing = False
    for source in ctx.spec["annotations"]:
        have = all((ctx.root / p).is_file() for p in local_paths(source))
        missing |= not have
        echo(f"annotation\t{'present' if have else 'fetch'}\t{source['url']}\t{', '.join(local_paths(source))}")
    if missing:
        echo("clips: listed from the annotation files, which are not all on disk yet; fetch them first with "
             f"`cmgh data download --dataset {ctx.name} --annotations-only` (small), then repeat --dry-run")
        return Report(ctx.name, ctx.root, pd.DataFrame(), 0, 0, 0.0, False)
    clips = plan.select(ctx.name, plan.clip_list(ctx.name, ctx.root), classes, limit)
    states = {"fetch": 0, "present": 0, "skip": 0, INVALID_ID: 0}
    where = " + ".join(s["url"] for s in ctx.spec["clip_archives"]) if ctx.spec["clip_archives"] else None
    for clip in clips:
        state = _state(ctx, clip, retry_all)
        states[state] += 1
        if state == "fetch" and clip.target is not None:
            url = where or clip_url(ctx.spec["clip_url"], clip.source_id)
            window = f"{clip.start:g}-{clip.end:g}s" if clip.start is not None and clip.end is not None else "whole"
            echo(f"clip\tfetch\t{clip.item_id}\t{url}\t{ctx.rel(clip.target)}\t{window}")
    echo(f"{ctx.name}: {len(clips)} clips selected: " + ", ".join(f"{n} {k}" for k, n in states.items())
         + " (skip: unavailable/private in an earlier run; --retry-all retries them)")
    return Report(ctx.name, ctx.root, pd.DataFrame(), len(clips), states["present"], 0.0, False)


def _finish(ctx: Context, clips: Sequence[plan.Clip], threshold: float, selection: dict[str, Any]) -> Report:
    clip_rows = [ctx.manifest.get("clip", c.item_id) for c in clips]
    rows = [r for r in ctx.manifest.rows.values() if r.kind != "clip"] + [r for r in clip_rows if r is not None]
    table = summary(rows)
    write_summary(ctx.root, table)
    available = sum(1 for r in clip_rows if r is not None and r.status == OK)
    report = Report(ctx.name, ctx.root, table, len(clips), available, threshold, False)
    if clips and report.fraction >= threshold:
        counts = {f"{k}/{s}": int(n) for k, s, n in table.itertuples(index=False)}
        stamp = {"source": "download", "dataset": ctx.name, "selection": selection, "sources": ctx.spec,
                 "reencode": ctx.dl.reencode.to_dict(), "counts": counts, "available": round(report.fraction, 6)}
        atomic_write_json(ctx.root / STAMP, stamp)
        report = Report(ctx.name, ctx.root, table, len(clips), available, threshold, True)
    return report


def download(
    cfg: Any,
    name: str,
    *,
    limit: int | None = None,
    classes: Sequence[str] = (),
    dry_run: bool = False,
    annotations_only: bool = False,
    min_available: float | None = None,
    workers: int | None = None,
    retry_all: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> Report:
    """Fetch dataset ``name`` as configured under ``data.download``; see the module docstring.

    Raises DownloadError when an annotation file cannot be had or when fewer than
    ``min_available`` (default ``data.download.min_available``) of the selected clips end ``ok``;
    the manifest and summary are written first either way.
    """
    root = formats.dataset_root(cfg, name)
    dl = cfg.data.download
    spec = dl[name].to_dict()
    check_sources(name, spec)
    threshold = float(dl.min_available if min_available is None else min_available)
    if not 0.0 <= threshold <= 1.0:
        raise DataError(f"--min-available {threshold}: expected a fraction between 0 and 1")
    workers = int(workers or dl.workers)
    policy = Policy.from_config(dl)
    ctx = Context(name, root, spec, dl, policy, RateLimiter(float(dl.rate_limit)), Manifest(root).load(), ytdlp=clipmod.ytdlp_options(dl, policy.timeout))
    if dry_run:
        return _dry_run(ctx, classes, limit, retry_all, echo)
    clips: list[plan.Clip] = []
    with _exclusive(ctx):
        (root / STAMP).unlink(missing_ok=True)
        try:
            _annotations(ctx)
            if annotations_only:
                echo(f"{name}: annotations in place under {root}")
                return Report(name, root, summary(list(ctx.manifest.rows.values())), 0, 0, threshold, False)
            clips = plan.select(name, plan.clip_list(name, root), classes, limit)
            todo = _pending(ctx, clips, retry_all)
            log.info("%s: %d clips selected, %d to fetch", name, len(clips), len(todo))
            if spec["clip_archives"]:
                _from_archives(ctx, todo)
            else:
                _from_sites(ctx, todo, workers, progress)
        finally:
            ctx.manifest.save()
        report = _finish(ctx, clips, threshold, {"limit": limit, "classes": sorted(classes)})
    echo(report.text())
    if not report.complete:
        raise DownloadError(
            f"{name}: {report.available} of {report.selected} clips available ({100 * report.fraction:.1f} %), "
            f"below the minimum {100 * threshold:.0f} % (data.download.min_available or --min-available); see {ctx.manifest.path}"
        )
    return report
