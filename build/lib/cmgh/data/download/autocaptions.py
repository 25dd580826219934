"""A downloaded video's automatic captions: fetched with it, converted and kept per video, then one caption.json.

yt-dlp writes the captions beside the video in staging (:mod:`cmgh.data.download.captions` reads
them). Each video's converted entry is written to ``captions/<youtube_id>.json`` before the video
gets its final name, so a video in place never lacks captions it had. At the end of a run
``caption.json`` (HowTo100M's layout) is assembled from the entries of every ``ok`` video by the
one writer of that format, streamed (flat memory for millions of videos) and atomic. Captions are optional: a
video without them is ``ok`` with the note ``no captions`` and has no entry; a caption file that
cannot be read or fetched costs the text only, never the video.
"""

from __future__ import annotations

import glob
import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cmgh import layout
from cmgh.data.datasets import caption_json
from cmgh.data.download import captions
from cmgh.data.download.clips import fetch_video
from cmgh.data.download.fetch import Deadline, FetchError, Policy, RateLimiter, retrying
from cmgh.errors import DataError
from cmgh.io import atomic_write_text

NO_CAPTIONS = "no captions"


def clear(workdir: Path, stem: str) -> None:
    """Caption files yt-dlp left for ``stem`` (an earlier attempt's may be partial)."""
    for ext in captions.SUBTITLE_FORMATS:
        for path in workdir.glob(f"{glob.escape(stem)}.*.{ext}"):
            path.unlink()


def fetch_with_captions(
    url: str, workdir: Path, stem: str, options: dict[str, Any], langs: Sequence[str],
    policy: Policy, deadline: Deadline, limiter: RateLimiter | None, stop: threading.Event | None,
) -> tuple[Path, str]:
    """The video behind ``url`` and its captions in ``langs`` where it has them; ``(video, note)``.

    yt-dlp fetches captions first and fails the whole call when they fail: after its retries the
    video is fetched alone and the note says why it has no text.
    """
    clear(workdir, stem)
    with_captions = {**options, **captions.subtitle_options(langs)}
    try:
        return retrying(lambda: fetch_video(url, workdir, stem, with_captions, deadline, limiter), policy, url, stop), ""
    except FetchError as exc:
        if not captions.subtitle_failed(exc.reason):
            raise
        note = f"captions not fetched ({exc.status}: {exc.reason})"
    clear(workdir, stem)
    return retrying(lambda: fetch_video(url, workdir, stem, options, deadline, limiter), policy, url, stop), note


def store(root: Path, workdir: Path, stem: str, video_id: str, langs: Sequence[str]) -> str:
    """Convert the captions yt-dlp wrote for ``stem`` into ``video_id``'s entry; the manifest note ("" when stored)."""
    target = layout.youtube8m_video_captions(root, video_id)
    found = captions.find_captions(workdir, stem, langs)
    try:
        segments = captions.read_captions(found) if found is not None else []
    except DataError as exc:
        target.unlink(missing_ok=True)
        return f"captions unreadable: {exc}"
    finally:
        clear(workdir, stem)
    if not segments:
        target.unlink(missing_ok=True)
        return NO_CAPTIONS
    atomic_write_text(target, json.dumps(captions.to_caption_entry(segments), separators=(",", ":"), ensure_ascii=False) + "\n")
    return ""


def assemble(root: Path, video_ids: Iterable[str]) -> tuple[Path, int]:
    """``caption.json`` from the stored entries of ``video_ids`` (sorted; those without one skipped),
    streamed through :func:`cmgh.data.datasets.caption_json.write_howto100m_captions`; ``(path, videos)``."""
    written = 0

    def entries() -> Iterator[tuple[str, dict[str, Any]]]:
        nonlocal written
        for video_id in sorted(set(video_ids)):
            path = layout.youtube8m_video_captions(root, video_id)
            if path.is_file():
                written += 1
                yield video_id, json.loads(path.read_text(encoding="utf-8"))

    return caption_json.write_howto100m_captions(root / layout.YOUTUBE8M_CAPTIONS, entries()), written
