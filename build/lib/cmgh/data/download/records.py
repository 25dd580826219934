"""YouTube-8M's index, before any video: the record files its download plans list, then the id lookup.

A download plan (the dataset's own format, JSON ``{"files": {"train00.tfrecord": "<md5>", ...}}``)
is fetched once into staging and kept, so a re-run works from the same list. Its files are fetched
(resumable, MD5-checked) and saved under the names the dataset's download script gives them:
``<split><NNNN>.tfrecord``, NNNN the position of the name's last two characters among the ordered
pairs of ``[a-z][A-Z][0-9]`` (``train00.tfrecord`` -> ``train3276.tfrecord``).

Then each selected 2018 pseudo id without a stored answer is looked up, one GET each, through the
bounded thread pool. Each answer is appended to ``video_ids.csv`` as it arrives
(:func:`cmgh.data.datasets.youtube8m_format.append_ids`: one table, not 6.1M small files), so a stored answer is
never asked for again; only failures get manifest rows (kind ``lookup``, and
``ok`` when a later run recovers one), which the clips of unresolved ids inherit in
:func:`cmgh.data.download.steps.pending`. 2017 records carry YouTube ids and need no lookup.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cmgh import layout
from cmgh.data.datasets import youtube8m
from cmgh.data.datasets import youtube8m_format as yt8m
from cmgh.data.datasets import download_list as plan
from cmgh.data.download.fetch import CORRUPT, ERROR, OK, UNAVAILABLE, FetchError, Interrupted, fetch, get_text, mismatch
from cmgh.data.download.manifest import Row
from cmgh.data.download.sources import archive_name
from cmgh.data.download.steps import Context, clip_state, fetch_or_reuse, pooled
from cmgh.errors import ConfigError, DataError, DownloadError

log = logging.getLogger(__name__)

NAME_ALPHABET = string.ascii_lowercase + string.ascii_uppercase + string.digits  # the download script's order
FILE_NUMBER = {a + b: i for i, (a, b) in enumerate(itertools.product(NAME_ALPHABET, repeat=2))}  # 3844 files per split
_PLAN_NAME = re.compile(rf"^({'|'.join(yt8m.RECORD_SPLITS)})([A-Za-z0-9]{{2}}){re.escape(layout.YOUTUBE8M_RECORD_SUFFIX)}$")
_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")


@dataclass(frozen=True)
class RecordFile:
    """One file of a download plan: where it is served, its MD5, where it goes."""

    url: str
    md5: str
    target: Path


def record_number(name: str, split: str, where: str) -> int:
    """The number the dataset's download script saves a plan's file under (``train00.tfrecord`` -> 3276)."""
    match = _PLAN_NAME.match(name)
    if match is None or match[1] != split:
        raise DownloadError(f"{where}: file {name!r} is not named {split}XX{layout.YOUTUBE8M_RECORD_SUFFIX} (XX: two of a-z, A-Z, 0-9)")
    return FILE_NUMBER[match[2]]


def read_plan(path: Path, entry: dict[str, Any], root: Path, where: str) -> list[RecordFile]:
    """The first ``max_files`` files of a stored download plan, in the plan's order."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DownloadError(f"{where}: not JSON ({exc}); expected a download plan {{\"files\": {{name: md5}}}}") from None
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, dict) or not files:
        raise DownloadError(f"{where}: no 'files' object, or an empty one; expected a download plan {{\"files\": {{name: md5}}}}")
    folder = entry["url"].rstrip("/")
    chosen = []
    for name, md5 in list(files.items())[: entry.get("max_files") or None]:
        if not isinstance(md5, str) or not _MD5.match(md5):
            raise DownloadError(f"{where}: files[{name!r}]: {str(md5)[:40]!r} is not an MD5, expected 32 hex digits")
        number = record_number(name, entry["split"], where)
        chosen.append(RecordFile(f"{folder}/{quote(name)}", md5.lower(), layout.youtube8m_record(root, entry["split"], number)))
    return chosen


# --------------------------------------------------------------------------------------------
# plans and record files


def _plan(ctx: Context, entry: dict[str, Any]) -> list[RecordFile]:
    """A plan from staging (a re-run resumes from the same list), or fetched there; DownloadError if it cannot be had."""
    url = entry["plan"]
    item_id = archive_name(url)
    staged = ctx.staging / item_id
    try:
        got = fetch_or_reuse(ctx, url, None)
        files = read_plan(got.path, entry, ctx.root, url)
    except FetchError as exc:
        ctx.manifest.record(Row("plan", item_id, url, ctx.rel(staged), exc.status, exc.reason))
        raise DownloadError(f"{ctx.name}: download plan {url}: {exc.status} ({exc.reason})") from None
    except DownloadError as exc:
        staged.unlink(missing_ok=True)  # the next run fetches it anew
        ctx.manifest.record(Row("plan", item_id, url, ctx.rel(staged), CORRUPT, str(exc)))
        raise
    ctx.manifest.record(Row("plan", item_id, url, ctx.rel(got.path), OK, "", got.bytes, got.sha256))
    return files


def _record(ctx: Context, record: RecordFile) -> Row:
    """One record file: kept if it is the plan's (checked by MD5 unless the manifest says so already), else fetched."""
    item_id, rel = record.target.name, ctx.rel(record.target)
    try:
        if record.target.is_file():
            size = record.target.stat().st_size
            previous = ctx.manifest.get("record", item_id)
            if previous is not None and previous.status == OK and previous.url == record.url and previous.bytes == size:
                return previous
            got, bad = mismatch(record.target, {"md5": record.md5})
            if bad is None:
                return _read_whole(ctx, record, Row("record", item_id, record.url, rel, OK, "", size, got["sha256"]))
            log.info("%s: %s is not the plan's file (md5 %s); fetching it again", ctx.name, rel, got["md5"])
            record.target.unlink()
        fetched = fetch(record.url, record.target, md5=record.md5, policy=ctx.policy, limiter=ctx.limiter, stop=ctx.stop)
    except FetchError as exc:
        log.info("%s %s: %s", ctx.name, item_id, exc)
        return Row("record", item_id, record.url, rel, exc.status, exc.reason)
    except Interrupted:
        raise
    except Exception as exc:  # one odd file must not end the run: record it
        log.exception("%s %s: unexpected failure", ctx.name, item_id)
        return Row("record", item_id, record.url, rel, ERROR, f"{exc.__class__.__name__}: {exc}")
    return _read_whole(ctx, record, Row("record", item_id, record.url, rel, OK, "", fetched.bytes, fetched.sha256))


def _read_whole(ctx: Context, record: RecordFile, row: Row) -> Row:
    """``row`` (ok) once the project's own reader has read every record of the file (framing, both checksums,
    each example), with at least one; else the file is deleted and recorded corrupt: the next run fetches it
    again (a file can match the plan's MD5 and still not be what the reader needs)."""
    try:
        videos = len(yt8m.read_records(record.target))
        if not videos:
            raise DataError(f"{record.target}: holds no records (expected video-level examples)")
    except DataError as exc:
        record.target.unlink(missing_ok=True)
        reason = f"{exc}; deleted: the next run fetches it again"
        log.warning("%s %s: %s", ctx.name, record.target.name, reason)
        return Row("record", row.item_id, row.url, row.path, CORRUPT, reason)
    return row


def fetch_records(ctx: Context, workers: int, show: bool) -> tuple[int, int]:
    """Every plan's files (a failed file is recorded and the run goes on); ``(files, files ok)``."""
    files = [record for entry in ctx.spec["records"] for record in _plan(ctx, entry)]
    pooled(ctx, files, _record, workers, show, "record", len(files))
    rows = [ctx.manifest.get("record", record.target.name) for record in files]
    return len(files), sum(1 for row in rows if row is not None and row.status == OK)


# --------------------------------------------------------------------------------------------
# the id lookup


def _template(ctx: Context, clips: Sequence[plan.Clip]) -> str:
    template = ctx.spec.get("id_lookup")
    if not template:
        first = next(c.item_id for c in clips if c.needs_lookup)
        raise ConfigError(f"data.download.{ctx.name}.id_lookup: not set, but the records hold 2018 pseudo ids (e.g. {first!r}); "
                          "expected the lookup's URL template, e.g. http://data.yt8m.org/2/j/i/{prefix}/{id}.js")
    return str(template)


def _lookup(ctx: Context, pseudo_id: str) -> Row | None:
    """One pseudo id looked up and its answer stored; a row only for a failure (or a recovery)."""
    url = yt8m.lookup_url(str(ctx.spec["id_lookup"]), pseudo_id)
    rel = ctx.rel(layout.youtube8m_ids(ctx.root))
    try:
        text = get_text(url, policy=ctx.policy, limiter=ctx.limiter, stop=ctx.stop)
        youtube_id = yt8m.parse_lookup_answer(text, pseudo_id, url)
        yt8m.append_ids(ctx.root, [(pseudo_id, youtube_id)])
    except FetchError as exc:
        reason = f"the id lookup does not know pseudo id {pseudo_id!r} ({exc.reason})" if exc.status == UNAVAILABLE else exc.reason
        return Row("lookup", pseudo_id, url, rel, exc.status, reason)
    except DataError as exc:
        return Row("lookup", pseudo_id, url, rel, CORRUPT, str(exc))
    except Interrupted:
        raise
    except Exception as exc:
        log.exception("%s lookup %s: unexpected failure", ctx.name, pseudo_id)
        return Row("lookup", pseudo_id, url, rel, ERROR, f"{exc.__class__.__name__}: {exc}")
    if ctx.manifest.get("lookup", pseudo_id) is None:
        return None  # the stored answer is the record of a lookup that worked
    return Row("lookup", pseudo_id, url, rel, OK, "", len(text.encode("utf-8")))


def lookups_to_make(ctx: Context, clips: Sequence[plan.Clip], retry_all: bool) -> list[str]:
    """Pseudo ids of ``clips`` still to look up (not the ones whose lookup failed for good, unless asked)."""
    return [c.item_id for c in clips if clip_state(ctx, c, retry_all) == "lookup"]


def look_up(ctx: Context, clips: Sequence[plan.Clip], workers: int, show: bool, retry_all: bool) -> list[plan.Clip]:
    """Look up the selected clips' pseudo ids; ``clips`` with the answers applied."""
    todo = lookups_to_make(ctx, clips, retry_all)
    if todo:
        _template(ctx, clips)
        log.info("%s: %d pseudo ids to look up", ctx.name, len(todo))
        yt8m.write_ids(ctx.root, yt8m.read_ids(ctx.root))  # compacted first: a torn line of a killed run never joins a new one
        pooled(ctx, todo, _lookup, workers, show, "id", len(todo))
    return youtube8m.resolve_lookups(ctx.root, clips)


# --------------------------------------------------------------------------------------------
# dry run


def dry_run(ctx: Context, echo: Callable[[str], None]) -> bool:
    """List the plans and record files to fetch; whether every plan's files are on disk (then the clips can be listed)."""
    complete, to_fetch, files = True, 0, 0
    for entry in ctx.spec["records"]:
        staged = ctx.staging / archive_name(entry["plan"])
        if not staged.is_file():
            echo(f"plan\tfetch\t{entry['plan']}\t{ctx.rel(staged)}\t{entry['split']}, first {entry.get('max_files') or 'all'} files")
            complete = False
            continue
        echo(f"plan\tpresent\t{entry['plan']}\t{ctx.rel(staged)}")
        for record in read_plan(staged, entry, ctx.root, str(staged)):
            files += 1
            if not record.target.is_file():
                to_fetch += 1
                complete = False
                echo(f"record\tfetch\t{record.url}\t{ctx.rel(record.target)}\tmd5 {record.md5}")
    echo(f"{ctx.name}: {files} record files listed by the plans on disk, {to_fetch} to fetch")
    return complete
