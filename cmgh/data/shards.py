"""Resumable sharded processing, shared by decoded extraction and packing.

Items are split into fixed-size groups, one shard each; a shard's inputs hash to a fingerprint
that its JSON (written last) records, so a re-run skips every finished shard and a changed
setting or item list redoes exactly the shards it touches. Items are processed by a process pool
in order, with a bounded number in flight, so the parent writes each shard as soon as its items
are in and never holds more than a few results (a packed video is megabytes).
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from tqdm import tqdm

from cmgh import layout
from cmgh.io import atomic_write, atomic_write_text, json_digest

log = logging.getLogger(__name__)
MANIFEST_COLUMNS = ("item_id", "source", "status")
OK = "ok"
# An item decoded (or packed) fine whose video has no captions: a video-audio pair. Readers that
# take the status before its colon (the counts below, the index builders) see ``ok``.
NO_CAPTIONS = "ok: no captions"

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
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=initializer, initargs=initargs) as pool:
        queue: deque[Future[R]] = deque()
        for task in tasks:
            queue.append(pool.submit(fn, task))
            if len(queue) >= limit:
                yield queue.popleft().result()
        while queue:
            yield queue.popleft().result()


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


def manifest_status(status: str, uncaptioned: bool) -> str:
    """The manifest's status of an item whose shard records ``status``: :data:`NO_CAPTIONS` for an
    ``ok`` item of a captioned corpus without captions, else ``status`` itself."""
    return NO_CAPTIONS if status == OK and uncaptioned else status


def write_tables(cfg: Any, out: Path, dataset: str, index: pd.DataFrame, manifest_rows: Iterable[dict[str, Any]]) -> Path:
    """The manifest (every source item with its status), the resolved config and, last, the index
    (the rule's output) of a finished feature folder; returns the index path."""
    manifest = pd.DataFrame(list(manifest_rows), columns=list(MANIFEST_COLUMNS))
    atomic_write_text(out / layout.FEATURE_MANIFEST, manifest.to_csv(index=False))
    cfg.write(out)
    index_path = out / layout.FEATURE_INDEX
    atomic_write(index_path, lambda fh: index.to_parquet(fh, index=False))
    counts = manifest["status"].map(lambda s: s if s == NO_CAPTIONS else s.split(":")[0]).value_counts().to_dict()
    log.info("%s: %s -> %s", dataset, counts, out)
    return index_path
