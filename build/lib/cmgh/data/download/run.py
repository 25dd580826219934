"""``cmgh data download``: one real dataset from its configured sources into its layout.

Order: the annotation files (plain, or members of archives), then (YouTube-8M) the record files
of its download plans and the id lookup of their pseudo ids, then the clips they name (video-site
IDs through yt-dlp, with their automatic captions where the dataset has ``caption_langs``, or
members of clip archives), then (YouTube-8M) ``caption.json`` from the captions of every ``ok``
video, the manifest, the summary and, when enough clips (and record files) are available, the
``.complete`` stamp the workflow waits for. Every step is resumable:
finished files carry their final names, unfinished ones live under ``<dataset>/.download/``
(``.part`` files that the next run continues), and a re-run fetches only what is missing.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cmgh import layout
from cmgh.data import datasets
from cmgh.data.datasets import youtube8m_format as yt8m
from cmgh.data.datasets import download_list as plan
from cmgh.data.download import autocaptions, records
from cmgh.data.download import clips as clipmod
from cmgh.data.datasets.items import INVALID_ID
from cmgh.data.download.fetch import OK, Policy, RateLimiter
from cmgh.data.download.manifest import Manifest, summary, write_summary
from cmgh.data.download.sources import check_sources, clip_url, local_paths
from cmgh.data.download.steps import Context, clip_state, fetch_annotations, from_archives, from_sites, pending
from cmgh.errors import DataError, DownloadError
from cmgh.io import atomic_write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Report:
    name: str
    root: Path
    summary: pd.DataFrame
    selected: int
    available: int
    min_available: float
    complete: bool
    records: tuple[int, int] | None = None  # YouTube-8M: (record files of the plans, files ok)

    @property
    def fraction(self) -> float:
        return self.available / self.selected if self.selected else 0.0

    @property
    def records_fraction(self) -> float:
        return self.records[1] / self.records[0] if self.records and self.records[0] else 1.0

    def shortfall(self) -> str:
        """What keeps the dataset from being complete ("" when nothing does)."""
        if self.records is not None and self.records_fraction < self.min_available:
            return f"{self.records[1]} of {self.records[0]} record files available ({100 * self.records_fraction:.1f} %)"
        if not self.selected or self.fraction < self.min_available:
            return f"{self.available} of {self.selected} clips available ({100 * self.fraction:.1f} %)"
        return ""

    def text(self) -> str:
        head = f"{self.name}: {self.available} of {self.selected} clips available ({100 * self.fraction:.1f} %, minimum {100 * self.min_available:.0f} %)"
        if self.records is not None:
            head += f"\n{self.name}: {self.records[1]} of {self.records[0]} record files available ({100 * self.records_fraction:.1f} %)"
        table = self.summary.to_string(index=False) if not self.summary.empty else "(nothing recorded)"
        return f"{head}\n{table}\nmanifest: {self.root / layout.DOWNLOAD_MANIFEST}"


# --------------------------------------------------------------------------------------------
# driver


@contextmanager
def _exclusive(ctx: Context) -> Iterator[None]:
    """One download per dataset folder at a time (two would race on the same part files)."""
    ctx.staging.mkdir(parents=True, exist_ok=True)
    with open(ctx.staging / layout.DOWNLOAD_LOCK, "w") as fh:
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
    if ctx.spec.get("records") and not records.dry_run(ctx, echo):
        echo("clips: listed from the record files, which are not all on disk yet; fetch them (and look up their ids) first with "
             f"`cmgh data download --dataset {ctx.name} --annotations-only`, then repeat --dry-run")
        return Report(ctx.name, ctx.root, pd.DataFrame(), 0, 0, 0.0, False)
    if missing:
        echo("clips: listed from the annotation files, which are not all on disk yet; fetch them first with "
             f"`cmgh data download --dataset {ctx.name} --annotations-only` (small), then repeat --dry-run")
        return Report(ctx.name, ctx.root, pd.DataFrame(), 0, 0, 0.0, False)
    dataset = datasets.get(ctx.name)
    clips = plan.select(ctx.name, plan.clip_list(dataset.clips(ctx.root)), classes, limit, dataset.classes_help)
    states = {"fetch": 0, "present": 0, "lookup": 0, "skip": 0, INVALID_ID: 0}
    where = " + ".join(s["url"] for s in ctx.spec["clip_archives"]) if ctx.spec.get("clip_archives") else None
    for clip in clips:
        state = clip_state(ctx, clip, retry_all)
        states[state] += 1
        if state == "lookup":
            echo(f"lookup\tfetch\t{clip.item_id}\t{yt8m.lookup_url(str(ctx.spec.get('id_lookup')), clip.item_id)}\t"
                 f"{ctx.rel(layout.youtube8m_ids(ctx.root))}")
        elif state == "fetch" and clip.target is not None:
            url = where or clip_url(ctx.spec["clip_url"], clip.source_id)
            window = f"{clip.start:g}-{clip.end:g}s" if clip.start is not None and clip.end is not None else "whole"
            echo(f"clip\tfetch\t{clip.item_id}\t{url}\t{ctx.rel(clip.target)}\t{window}")
    echo(f"{ctx.name}: {len(clips)} clips selected: " + ", ".join(f"{n} {k}" for k, n in states.items())
         + " (lookup: its video is known after the id lookup; skip: unavailable/private in an earlier run; --retry-all retries them)")
    return Report(ctx.name, ctx.root, pd.DataFrame(), len(clips), states["present"], 0.0, False)


def _finish(ctx: Context, clips: Sequence[plan.Clip], threshold: float, selection: dict[str, Any], record_counts: tuple[int, int] | None) -> Report:
    clip_rows = [ctx.manifest.get("clip", c.item_id) for c in clips]
    rows = [r for r in ctx.manifest.rows.values() if r.kind != "clip"] + [r for r in clip_rows if r is not None]
    table = summary(rows)
    write_summary(ctx.root, table)
    available = sum(1 for r in clip_rows if r is not None and r.status == OK)
    report = Report(ctx.name, ctx.root, table, len(clips), available, threshold, False, record_counts)
    if not report.shortfall():
        counts = {f"{k}/{s}": int(n) for k, s, n in table.itertuples(index=False)}
        stamp = {"source": "download", "dataset": ctx.name, "selection": selection, "sources": ctx.spec,
                 "reencode": ctx.dl.reencode.to_dict(), "counts": counts, "available": round(report.fraction, 6)}
        atomic_write_json(ctx.root / layout.STAMP, stamp)
        report = Report(ctx.name, ctx.root, table, len(clips), available, threshold, True, record_counts)
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

    Raises DownloadError when an annotation file (or a download plan) cannot be had or when fewer
    than ``min_available`` (default ``data.download.min_available``) of the selected clips, or of
    the plans' record files, end ``ok``; the manifest and summary are written first either way.
    With ``annotations_only``, YouTube-8M's index (record files, id lookups) is fetched too: the
    clips are listed from it.
    """
    root = datasets.dataset_root(cfg, name)
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
    record_counts: tuple[int, int] | None = None
    with _exclusive(ctx):
        (root / layout.STAMP).unlink(missing_ok=True)  # the workflow's `download` output, as the generator's
        try:
            fetch_annotations(ctx)
            if spec.get("records"):
                record_counts = records.fetch_records(ctx, workers, progress)
            if annotations_only and not spec.get("records"):
                echo(f"{name}: annotations in place under {root}")
                return Report(name, root, summary(list(ctx.manifest.rows.values())), 0, 0, threshold, False)
            dataset = datasets.get(name)
            clips = plan.select(name, plan.clip_list(dataset.clips(root)), classes, limit, dataset.classes_help)
            if spec.get("records"):
                clips = records.look_up(ctx, clips, workers, progress, retry_all)
                if annotations_only:
                    echo(f"{name}: annotations, {record_counts[1]} of {record_counts[0]} record files and the id lookups in place under {root}")
                    return Report(name, root, summary(list(ctx.manifest.rows.values())), 0, 0, threshold, False, record_counts)
            todo = pending(ctx, clips, retry_all)
            log.info("%s: %d clips selected, %d to fetch", name, len(clips), len(todo))
            if spec.get("clip_archives"):
                from_archives(ctx, todo)
            else:
                from_sites(ctx, todo, workers, progress)
            if spec.get("caption_langs"):
                ok = (Path(r.path).stem for r in ctx.manifest.rows.values() if r.kind == "clip" and r.status == OK and r.path)
                path, count = autocaptions.assemble(root, ok)
                log.info("%s: captions of %d videos in %s", name, count, path)
        finally:
            ctx.manifest.save()
        report = _finish(ctx, clips, threshold, {"limit": limit, "classes": sorted(classes)}, record_counts)
    echo(report.text())
    if not report.complete:
        raise DownloadError(
            f"{name}: {report.shortfall()}, below the minimum {100 * threshold:.0f} % "
            f"(data.download.min_available or --min-available); see {ctx.manifest.path}"
        )
    return report
