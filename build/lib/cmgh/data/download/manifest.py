"""The download manifest: one row per annotation file and clip, with its status and error.

Finished items are appended to a journal (one flushed CSV line each) as they complete, so a
killed run loses at most the line being written. The full manifest is rewritten atomically from
the previous manifest plus the journal at the end of every run (also after Ctrl-C or an error);
after a kill, the next run reads the journal left behind. A torn last journal line is ignored:
the file on disk, not the manifest, decides whether a clip is done.
"""

from __future__ import annotations

import csv
import io
import os
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd

from cmgh import layout
from cmgh.data.download.fetch import STATUSES
from cmgh.io import atomic_write_text


@dataclass(frozen=True)
class Row:
    kind: str  # "annotation" or "clip"
    item_id: str
    url: str
    path: str  # relative to the dataset folder ("" when the ID is not a safe file name)
    status: str
    error: str = ""
    bytes: int = 0
    sha256: str = ""


COLUMNS = tuple(f.name for f in fields(Row))


def _row(values: list[str]) -> Row | None:
    if len(values) != len(COLUMNS) or not values[-4] or not values[-2].isdigit():
        return None
    record = dict(zip(COLUMNS, values, strict=True))
    return Row(**{**record, "bytes": int(record["bytes"])})  # type: ignore[arg-type]


def _read(path: Path) -> list[Row]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as fh:
        rows = [_row(values) for values in csv.reader(fh)]
    return [r for r in rows if r is not None and r.kind != "kind"]


class Manifest:
    """Rows by ``(kind, item_id)``; thread-safe ``record``; ``save`` rewrites the CSV atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / layout.DOWNLOAD_MANIFEST
        self.journal = root / layout.DOWNLOAD_STAGING / layout.DOWNLOAD_JOURNAL
        self.rows: dict[tuple[str, str], Row] = {}
        self._lock = threading.Lock()
        self._fh: io.TextIOWrapper | None = None

    def load(self) -> Manifest:
        for row in _read(self.path) + _read(self.journal):
            self.rows[(row.kind, row.item_id)] = row
        return self

    def get(self, kind: str, item_id: str) -> Row | None:
        return self.rows.get((kind, item_id))

    def record(self, row: Row) -> None:
        with self._lock:
            self.rows[(row.kind, row.item_id)] = row
            if self._fh is None:
                self.journal.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.journal, "a", encoding="utf-8", newline="")
            csv.writer(self._fh, lineterminator="\n").writerow(asdict(row).values())
            self._fh.flush()

    def save(self) -> Path:
        with self._lock:
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(COLUMNS)
            for row in self.rows.values():
                writer.writerow(asdict(row).values())
            atomic_write_text(self.path, text.getvalue())
            if self._fh is not None:
                self._fh.close()
                self._fh = None
            if self.journal.exists():
                os.truncate(self.journal, 0)  # everything in it is in the manifest now
        return self.path


def summary(rows: list[Row]) -> pd.DataFrame:
    """Counts per kind and status (every status that occurs, in the canonical order)."""
    table = pd.DataFrame([(r.kind, r.status) for r in rows], columns=["kind", "status"])
    counts = table.value_counts().rename("count").reset_index()
    order = {s: i for i, s in enumerate(STATUSES)}
    counts["rank"] = counts["status"].map(lambda s: order.get(s, len(order)))
    return counts.sort_values(["kind", "rank", "status"]).drop(columns="rank").reset_index(drop=True)


def write_summary(root: Path, table: pd.DataFrame) -> Path:
    return atomic_write_text(root / layout.DOWNLOAD_SUMMARY, table.to_csv(index=False))
