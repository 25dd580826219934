"""What a packed corpus is made of: one :class:`PackItem` per source video or segment, with the
captions and labels its JSON member carries. Each pre-training dataset lists its own
(``SPEC.packing``, :mod:`cmgh.data.datasets`); :mod:`cmgh.data.extract.packed` packs them.
Imports no media library: the registry loads it at the workflow's parse time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmgh.data.datasets.items import caption_tracks


@dataclass(frozen=True)
class PackItem:
    """One source video: its member key, where it lives, and the metadata its JSON member carries."""

    item_id: str
    key: str
    source: Path
    source_id: str
    relpath: str  # source relative to the dataset root (what the manifest, index and JSON say)
    meta: dict[str, Any] = field(default_factory=dict)  # the dataset's index columns
    captions: tuple[tuple[float, float, str], ...] = ()  # (start, end, text) in source seconds
    labels: tuple[int, ...] = ()
    status: str | None = None  # decided at planning, nothing to pack (a YouTube-8M record without a YouTube id)


def member_key(item_id: str) -> str:
    """WebDataset splits a member name at its first dot: keys carry none."""
    return item_id.replace(".", "_")


def caption_tuples(path: Path) -> dict[str, tuple[tuple[float, float, str], ...]]:
    """A ``caption.json`` as ``(start, end, text)`` per video (what a sample's JSON member carries)."""
    tracks, _ = caption_tracks(path)
    return {vid: tuple(zip(g["start"].astype(float), g["end"].astype(float), g["text"].astype(str), strict=True)) for vid, g in tracks.items()}


def unpackable(item_id: str, source: Path, root: Path, status: str, labels: tuple[int, ...] = ()) -> PackItem:
    """An item whose status was decided at planning (an unsafe id, no YouTube id, no known label):
    recorded in the manifest under ``source`` (its annotation file, when the id names no file), never packed."""
    return PackItem(item_id, member_key(item_id), source, item_id, os.path.relpath(source, root), labels=labels, status=status)
