"""Which clips a dataset's annotation files ask for, where each one goes, and the user's slice.

Each dataset's ``download_clips`` (its ``SPEC.clips``, :mod:`cmgh.data.datasets`) turns the rows of
its annotation files into :class:`Clip` requests whose targets are exactly the paths the extractor
will read. An ID that is not a safe file name becomes a request without a target (manifest status
``invalid id``, :func:`clip_target`), never a path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cmgh.errors import DataError
from cmgh.io import safe_id


@dataclass(frozen=True)
class Clip:
    """One media file to obtain."""

    item_id: str
    split: str
    classes: tuple[str, ...]
    source_id: str  # the ID that goes into the clip URL template
    target: Path | None  # None: the ID is not a safe file name
    start: float | None = None  # window in the source video (None: the whole video)
    end: float | None = None
    error: str = ""
    needs_lookup: bool = False  # a YouTube-8M pseudo id without a stored lookup answer (no target yet)


def clip_target(make: Callable[[str], Path], what: str, value: str) -> tuple[Path | None, str]:
    """``(make(value), "")`` for a path-safe ``value``, else ``(None, why)``: a request without a target."""
    try:
        return make(safe_id(value, what)), ""
    except DataError as exc:
        return None, str(exc)


def clip_list(clips: Iterable[Clip]) -> list[Clip]:
    """``clips`` (what a dataset's annotation files on disk name: its ``SPEC.clips``), once each."""
    seen: set[str] = set()
    unique = []
    for clip in clips:
        if clip.item_id not in seen:
            seen.add(clip.item_id)
            unique.append(clip)
    return unique


def select(name: str, clips: Sequence[Clip], classes: Iterable[str] = (), limit: int | None = None, classes_help: str = "class names") -> list[Clip]:
    """The user's slice: clips of any of ``classes`` (all when empty; ``classes_help`` says what they
    are, its ``SPEC.classes_help``), at most ``limit`` per split."""
    wanted = {c.strip() for c in classes if c.strip()}
    if wanted:
        known = {c for clip in clips for c in clip.classes}
        unknown = sorted(wanted - known)
        if unknown:
            examples = ", ".join(repr(c) for c in sorted(known)[:5])
            raise DataError(f"{name}: --classes {unknown[0]!r} names no clip (expected {classes_help}, e.g. {examples})")
        clips = [clip for clip in clips if wanted.intersection(clip.classes)]
    if limit is not None:
        if limit < 1:
            raise DataError(f"--limit {limit}: expected a positive number of clips per split")
        taken: Counter[str] = Counter()
        kept = []
        for clip in clips:
            if taken[clip.split] < limit:
                taken[clip.split] += 1
                kept.append(clip)
        clips = kept
    return list(clips)
