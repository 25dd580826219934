"""YouTube captions (WebVTT or json3, as yt-dlp writes them) -> HowTo100M caption segments.

YouTube's automatic captions roll: each cue shows the previous line above the new one, and a
~10 ms "carry" cue holds the old line alone between two cues. Read naively, every spoken line
would appear two or three times. The readers here keep one segment per spoken line, with the
time the line was being spoken, which is what HowTo100M's ``caption.json`` holds.

yt-dlp names a subtitle file ``<stem>.<lang>.<ext>`` beside ``<stem>.<video ext>``; that naming
is yt-dlp's, so :func:`find_captions` keeps it here next to the options that ask for it.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cmgh.errors import ConfigError, DataError

Segment = tuple[float, float, str]  # start s, end s, text

SUBTITLE_FORMATS = ("json3", "vtt")  # yt-dlp's preference order, and the readers below
SUBTITLE_FAILURE = "Unable to download video subtitles"  # how yt-dlp's message for it begins
_LANG = re.compile(r"[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*")
_TIMESTAMP = re.compile(r"(?:(\d+):)?([0-5]\d):([0-5]\d)\.(\d{3})")
_TIMING = re.compile(r"(\S+)[ \t]+-->[ \t]+(\S+)(?:[ \t].*)?")
_WORD_TAG = re.compile(r"<(?:\d+:)?\d{2}:\d{2}\.\d{3}>|<c[.>]")  # YouTube's per-word timing: a rolling file
_TAG = re.compile(r"<[^>]*>")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_SKIPPED_BLOCKS = ("NOTE", "STYLE", "REGION")


def _show(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


def _clean(text: str) -> str:
    """VTT cue text: tags stripped first, so an escaped ``&lt;`` survives as ``<``; whitespace collapsed."""
    return " ".join(html.unescape(_TAG.sub("", text)).split())


# --------------------------------------------------------------------------------------------
# WebVTT


def _seconds(stamp: str, where: str, number: int, what: str) -> float:
    match = _TIMESTAMP.fullmatch(stamp)
    if match is None:
        raise DataError(f"{where}: line {number}: bad cue {what} {_show(stamp)}, expected HH:MM:SS.mmm or MM:SS.mmm")
    hours, minutes, seconds, millis = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(millis) / 1000


def _cues(text: str, where: str) -> list[tuple[float, float, list[str]]]:
    """``(start, end, payload lines)`` of every cue; NOTE, STYLE and REGION blocks skipped."""
    lines = _LINE_BREAK.split(text.removeprefix("\ufeff"))
    header = lines[0] if lines else ""
    if not (header == "WEBVTT" or header.startswith(("WEBVTT ", "WEBVTT\t"))):
        raise DataError(f"{where}: line 1: {_show(header)} is not a WebVTT header, expected 'WEBVTT'")
    cues: list[tuple[float, float, list[str]]] = []
    i = 1
    while i < len(lines) and lines[i] != "":  # header fields (Kind:, Language:)
        i += 1
    while i < len(lines):
        line = lines[i]
        if line.strip() == "":
            i += 1
            continue
        if line.split(maxsplit=1)[0] in _SKIPPED_BLOCKS and "-->" not in line:
            while i < len(lines) and lines[i] != "":
                i += 1
            continue
        if "-->" not in line:  # a cue identifier: the timing must follow
            i += 1
            if i >= len(lines) or "-->" not in lines[i]:
                found = "end of file" if i >= len(lines) else _show(lines[i])
                raise DataError(f"{where}: line {i + 1}: {found} after cue identifier {_show(line)}, expected a cue timing 'start --> end'")
            line = lines[i]
        match = _TIMING.fullmatch(line.strip())
        if match is None:
            raise DataError(f"{where}: line {i + 1}: bad cue timing {_show(line)}, expected 'start --> end'")
        start, end = _seconds(match[1], where, i + 1, "start"), _seconds(match[2], where, i + 1, "end")
        if end < start:
            raise DataError(f"{where}: line {i + 1}: cue ends at {match[2]}, before its start {match[1]}; expected end >= start")
        i += 1
        payload = []
        while i < len(lines) and lines[i] != "" and "-->" not in lines[i]:
            payload.append(lines[i])
            i += 1
        cues.append((start, end, payload))
    return cues


def parse_vtt(text: str, where: str) -> list[Segment]:
    """Segments of a WebVTT file: one per spoken line for YouTube's rolling auto-captions, one per cue otherwise."""
    cues = _cues(text, where)
    rolling = any(_WORD_TAG.search(line) for _, _, payload in cues for line in payload)
    segments: list[Segment] = []
    shown: list[str] = []  # the lines of the previous cue, as displayed
    for start, end, payload in cues:
        lines = [(clean, bool(_WORD_TAG.search(raw))) for raw in payload if (clean := _clean(raw))]
        if rolling:
            # The longest run of leading lines repeating the end of the previous cue is the old
            # text rolled up; a line with word timing is always new (the same words said again).
            repeat = 0
            for k in range(min(len(lines), len(shown)), 0, -1):
                if not any(tagged for _, tagged in lines[:k]) and [c for c, _ in lines[:k]] == shown[-k:]:
                    repeat = k
                    break
            shown = [c for c, _ in lines]
            lines = lines[repeat:]
        if lines:
            segments.append((start, end, " ".join(c for c, _ in lines)))
    return segments


# --------------------------------------------------------------------------------------------
# json3


def _millis(event: dict[str, Any], key: str, where: str, index: int) -> float:
    value = event[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise DataError(f"{where}: events[{index}].{key}: {_show(str(value))}, expected a non-negative number of milliseconds")
    return value / 1000


def parse_json3(data: str | bytes, where: str) -> list[Segment]:
    """Segments of YouTube's json3 captions: one per line, ``aAppend`` events continuing the last one.

    A line is on screen until its window is rewritten, often well into the next line, so each
    end is clipped to the next line's start (never below its own start).
    """
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: not valid JSON ({exc}), expected YouTube json3 captions") from None
    events = doc.get("events") if isinstance(doc, dict) else None
    if not isinstance(events, list):
        raise DataError(f"{where}: no 'events' list, expected YouTube json3 captions {{\"events\": [...]}}")
    lines: list[list[Any]] = []  # [start, end or None, text]
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise DataError(f"{where}: events[{index}]: {type(event).__name__}, expected an object")
        segs = event.get("segs")
        if segs is None:  # window and pen definitions carry no text
            continue
        if not isinstance(segs, list):
            raise DataError(f"{where}: events[{index}].segs: {type(segs).__name__}, expected a list of {{\"utf8\": text}}")
        parts = []
        for j, seg in enumerate(segs):
            if not isinstance(seg, dict) or not isinstance(seg.get("utf8"), str):
                raise DataError(f"{where}: events[{index}].segs[{j}]: missing 'utf8', expected {{\"utf8\": text}}")
            parts.append(seg["utf8"])
        text = "".join(parts)
        if "tStartMs" not in event:
            raise DataError(f"{where}: events[{index}]: missing 'tStartMs', expected the event's start in milliseconds")
        start = _millis(event, "tStartMs", where, index)
        end = start + _millis(event, "dDurationMs", where, index) if "dDurationMs" in event else None
        if not text.strip():
            continue
        if event.get("aAppend") and lines:
            last = lines[-1]
            last[2] += " " + text
            if end is not None:
                last[1] = end if last[1] is None else max(last[1], end)
        else:
            lines.append([start, end, text])
    segments: list[Segment] = []
    for i, (start, end, text) in enumerate(lines):
        following = lines[i + 1][0] if i + 1 < len(lines) else None
        if end is None:
            end = following if following is not None else start
        elif following is not None:
            end = min(end, following)
        segments.append((start, max(start, end), " ".join(text.split())))  # json3 text is plain, never HTML
    return [s for s in segments if s[2]]


# --------------------------------------------------------------------------------------------
# files


def read_captions(path: Path) -> list[Segment]:
    """Segments of a ``.vtt`` or ``.json3`` caption file; DataError naming the file if it is malformed."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".vtt", ".json3"):
        raise DataError(f"{path}: unknown caption format {suffix or '(no suffix)'!r}, expected .vtt or .json3")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read captions ({exc.strerror or exc})") from None
    if suffix == ".json3":
        return parse_json3(raw, str(path))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: byte {exc.start} is not UTF-8, expected a UTF-8 WebVTT file") from None
    return parse_vtt(text, str(path))


def to_caption_entry(segments: Sequence[Segment]) -> dict[str, list[Any]]:
    """One video's entry of HowTo100M's ``caption.json``: parallel start, end and text lists."""
    return {
        "start": [round(s, 2) for s, _, _ in segments],
        "end": [round(e, 2) for _, e, _ in segments],
        "text": [t for _, _, t in segments],
    }


# --------------------------------------------------------------------------------------------
# yt-dlp


def _check_langs(langs: Sequence[str]) -> list[str]:
    if isinstance(langs, str) or not langs:
        raise ConfigError(f"subtitle languages {langs!r}: expected a non-empty list of language codes like ['en']")
    for lang in langs:
        if not isinstance(lang, str) or not _LANG.fullmatch(lang):
            raise ConfigError(f"subtitle language {lang!r}: expected a language code like 'en' or 'en-US'")
    return list(langs)


def subtitle_options(langs: Sequence[str]) -> dict[str, Any]:
    """yt-dlp options that write uploaded and automatic captions in ``langs`` beside the video.

    Uploaded subtitles win over automatic captions of the same language (yt-dlp's rule). The
    languages are escaped because yt-dlp reads them as regular expressions, and
    :func:`find_captions` looks for the literal names. Subtitles are written as files, never
    embedded (that needs ffmpeg). yt-dlp fetches subtitles before the video and a failed
    subtitle download fails the whole call (see :func:`subtitle_failed`).
    """
    return {
        "writesubtitles": True,
        "writeautomaticsub": True,
        "subtitleslangs": [re.escape(lang) for lang in _check_langs(langs)],
        "subtitlesformat": "/".join(SUBTITLE_FORMATS),
    }


def subtitle_failed(message: str) -> bool:
    """Whether a yt-dlp error is its subtitle download failing: the video itself may still be there.

    yt-dlp raises this before fetching the video, and its only way to go on (``ignoreerrors``)
    also swallows the video's own errors, so the caller retries without subtitle options.
    """
    return SUBTITLE_FAILURE in message


def find_captions(workdir: Path, stem: str, langs: Sequence[str]) -> Path | None:
    """The caption file yt-dlp wrote for ``stem``: first language of ``langs``, json3 before vtt."""
    for lang in _check_langs(langs):
        for ext in SUBTITLE_FORMATS:
            path = Path(workdir) / f"{stem}.{lang}.{ext}"
            if path.is_file():
                return path
    return None
