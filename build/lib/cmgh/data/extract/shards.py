"""Resumable sharded processing, shared by decoded extraction and packing.

Items are split into fixed-size groups, one shard each; a shard's inputs hash to a fingerprint
that its JSON (written last) records, so a re-run skips every finished shard and a changed
setting or item list redoes exactly the shards it touches. A shard is finished only when its
files check out too (:func:`finished`): a truncated or deleted array or tar is made again.
Items are processed by a process pool in order, with a bounded number in flight, so the parent
writes each shard as soon as its items are in and never holds more than a few results (a packed
video is megabytes).
"""

from __future__ import annotations

import ctypes
import json
import logging
import multiprocessing as mp
import os
import signal
import sys
import tarfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from tqdm import tqdm

from cmgh import layout
from cmgh.data.datasets.items import INVALID_ID
from cmgh.errors import DataError
from cmgh.io import atomic_write, atomic_write_text, json_digest

log = logging.getLogger(__name__)
MANIFEST_COLUMNS = ("item_id", "source", "status")
OK = "ok"
# An item decoded (or packed) fine whose video has no captions: a video-audio pair. Readers that
# take the status before its colon see ``ok``.
NO_CAPTIONS = "ok: no captions"
# An item decoded (or packed) fine whose file has no audio stream (real downloads hold such clips):
# its audio is silence, so AudioSet tagging leaves it out (the index's ``has_audio`` is False).
NO_AUDIO = "ok: no audio stream"
DETAILED = ("corrupt", INVALID_ID)  # statuses whose text after the colon is the item's own (a reason, a line)

T = TypeVar("T")
R = TypeVar("R")


def split(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def fingerprint(spec: Any, rows: Iterable[Any]) -> str:
    """Hash of a shard's settings (a dataclass) and its items' descriptions (JSON-able rows)."""
    return json_digest([spec.__dict__, list(rows)], 16)


def recorded(shard_json: Path, fp: str) -> bool:
    """The shard's JSON exists, parses and carries fingerprint ``fp``."""
    try:
        return json.loads(shard_json.read_text())["fingerprint"] == fp
    except (OSError, ValueError, KeyError, TypeError):
        return False


def finished(shard_json: Path, fp: str, check: Callable[[list[dict[str, Any]]], R], redo: str) -> R | None:
    """``check(records)`` (the per-item records of the shard's JSON) when the JSON carries
    fingerprint ``fp`` and ``check`` finds the shard's files intact, else None: the shard is to be
    made again (``redo``: how, for the warning). ``check`` raises to say the files are damaged."""
    if not recorded(shard_json, fp):
        return None
    try:
        return check(json.loads(shard_json.read_text())["items"])
    except (OSError, ValueError, KeyError, TypeError, tarfile.TarError, DataError) as exc:
        log.warning("%s: damaged (%s); %s the shard again", shard_json.with_suffix(""), " ".join(str(exc).split())[:300], redo)
        return None


def progress(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="clip", disable=not sys.stderr.isatty(), leave=False)


def ordered_map(
    fn: Callable[[T], R],
    tasks: Sequence[T],
    workers: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
    in_flight: int | None = None,
) -> Iterator[R]:
    """``fn`` over ``tasks`` in order, in ``workers`` forked processes (in this one when 0).

    At most ``in_flight`` (default 2 x workers) results exist at a time: a slow task at the head
    holds back the others instead of letting finished results pile up in memory.
    """
    if workers <= 0 or len(tasks) < 2:
        if initializer is not None:
            initializer(*initargs)
        for task in tasks:
            yield fn(task)
        return
    ctx = mp.get_context("fork")  # like torch DataLoader workers: no re-import of torch per worker
    limit = max(1, in_flight or 2 * workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_start, initargs=(initializer, initargs)) as pool:
        queue: deque[Future[R]] = deque()
        for task in tasks:
            queue.append(pool.submit(fn, task))
            if len(queue) >= limit:
                yield queue.popleft().result()
        while queue:
            yield queue.popleft().result()


def _worker_start(initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    """A worker dies with its parent (Linux ``PR_SET_PDEATHSIG``): a kill -9 of the extraction leaves no
    orphan decoding on; then the caller's own initializer."""
    die_with_parent()
    if initializer is not None:
        initializer(*initargs)


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux only; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        parent = mp.parent_process()
        if parent is not None and os.getppid() != parent.pid:  # it died before the call: nothing will signal us
            os._exit(1)


def run(groups: Sequence[Sequence[Any]], pending: Sequence[int], results: Iterator[R], write: Callable[[int, Iterator[R]], None], desc: str) -> None:
    """Feed the ordered ``results`` of the pending shards' items to ``write(k, its results)``, shard by shard.

    ``write`` must consume its iterator (it may stream it: a packed shard's tar is written as its
    samples arrive).
    """
    bar = progress(sum(len(groups[k]) for k in pending), desc)

    def take(count: int) -> Iterator[R]:
        for _ in range(count):
            result = next(results)
            bar.update(1)
            yield result

    for k in pending:
        chunk = take(len(groups[k]))
        write(k, chunk)
        for _ in chunk:  # a writer that stopped early must not shift the next shard's items
            pass
    for _ in results:  # drain (nothing expected): lets the pool shut down cleanly
        pass
    bar.close()


def remove_stale(shards: Path, count: int) -> None:
    """Delete shard files numbered ``count`` or above (left by a run over more items)."""
    for path in shards.iterdir():
        stem = path.name.split(".")[0]
        if stem.isdigit() and int(stem) >= count:
            path.unlink()


def manifest_status(status: str, uncaptioned: bool, has_audio: bool = True) -> str:
    """The manifest's status of an item whose shard records ``status``: for an ``ok`` item,
    :data:`NO_AUDIO` without an audio stream, else :data:`NO_CAPTIONS` for a captioned corpus's item
    without captions; else ``status`` itself."""
    if status != OK:
        return status
    return NO_AUDIO if not has_audio else NO_CAPTIONS if uncaptioned else status


def summary_key(status: str) -> str:
    """How the summary line counts a status: ``corrupt`` and ``invalid id`` without their per-item
    detail, every other status whole (``ok: no captions``, ``skipped: no known label``)."""
    kind = status.split(":")[0]
    return kind if kind in DETAILED else status


def read_manifest(folder: Path) -> pd.DataFrame:
    """A feature folder's manifest (every source item with its status); a missing or malformed one
    is one DataError naming it."""
    path = folder / layout.FEATURE_MANIFEST
    try:
        manifest = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"{path}: missing (run `cmgh data extract` for this dataset)") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({' '.join(str(exc).split())[:160]}); expected columns {', '.join(MANIFEST_COLUMNS)}") from None
    if list(manifest.columns) != list(MANIFEST_COLUMNS):
        raise DataError(f"{path}: columns {list(manifest.columns)}, expected {list(MANIFEST_COLUMNS)}")
    return manifest


def left_out(folder: Path, also: tuple[str, ...] = ()) -> dict[str, int]:
    """How many source items of a feature folder its index lacks, per :func:`summary_key` of their
    status; plus the ``ok`` statuses in ``also`` that the caller leaves out too (:data:`NO_AUDIO`)."""
    status = read_manifest(folder)["status"]
    out = (status.str.split(":").str[0] != OK) | status.isin(also)
    return {str(k): int(v) for k, v in status[out].map(summary_key).value_counts().items()}


def describe(counts: dict[str, int]) -> str:
    """``left_out``'s counts as one phrase, ``2 missing, 1 ok: no audio stream`` (statuses as the manifest spells them)."""
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))


def write_tables(cfg: Any, out: Path, dataset: str, index: pd.DataFrame, manifest_rows: Iterable[dict[str, Any]]) -> Path:
    """The manifest (every source item with its status), the resolved config and, last, the index
    (the rule's output) of a finished feature folder; returns the index path."""
    manifest = pd.DataFrame(list(manifest_rows), columns=list(MANIFEST_COLUMNS))
    atomic_write_text(out / layout.FEATURE_MANIFEST, manifest.to_csv(index=False))
    cfg.write(out)
    index_path = out / layout.FEATURE_INDEX
    atomic_write(index_path, lambda fh: index.to_parquet(fh, index=False))
    log.info("%s: %s -> %s", dataset, manifest["status"].map(summary_key).value_counts().to_dict(), out)
    return index_path
