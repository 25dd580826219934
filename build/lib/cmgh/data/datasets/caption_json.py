"""``caption.json``: HowTo100M's timed captions, the layout YouTube-8M's automatic captions are converted to.

``{video_id: {"start": [s], "end": [s], "text": [str]}}`` of ASR-like segments. Readers validate
every entry: a malformed one raises :class:`~cmgh.errors.DataError` naming the file and the JSON
field. The writer is deterministic and atomic.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import pandas as pd

from cmgh import layout
from cmgh.data.io.tables import as_float, bad, load_json
from cmgh.errors import DataError
from cmgh.io import atomic_write
from cmgh.layout import PathLike


def write_howto100m_captions(path: PathLike, captions: Mapping[str, Mapping[str, Sequence[Any]]] | Iterable[tuple[str, Mapping[str, Sequence[Any]]]]) -> Path:
    """``caption.json``: ``{video_id: {"start": [...], "end": [...], "text": [...]}}`` (compact, like the original).

    Streamed entry by entry, so ``captions`` may be a generator of ``(video_id, entry)`` pairs:
    a download assembles millions of videos' captions in flat memory.
    """
    entries = captions.items() if isinstance(captions, Mapping) else captions

    def write(fh: IO[bytes]) -> None:
        fh.write(b"{")
        for n, (vid, c) in enumerate(entries):
            entry = {"start": [float(s) for s in c["start"]], "end": [float(e) for e in c["end"]], "text": [str(t) for t in c["text"]]}
            item = json.dumps(str(vid), ensure_ascii=False) + ":" + json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
            fh.write((b"," if n else b"") + item.encode("utf-8"))
        fh.write(b"}\n")

    return atomic_write(path, write)


def read_howto100m_captions(path: PathLike) -> pd.DataFrame:
    """Long table ``video_id, start, end, text`` sorted by video then start time."""
    path, data = load_json(path, f"HowTo100M captions ({layout.HOWTO100M_CAPTIONS})")
    if not isinstance(data, dict):
        raise DataError(f"{path}: top level is a {type(data).__name__}, expected an object video_id -> captions")
    vids: list[str] = []
    starts: list[float] = []
    ends: list[float] = []
    texts: list[str] = []
    for vid, entry in data.items():
        if not isinstance(entry, dict):
            raise DataError(f"{path}: [{vid!r}]: {type(entry).__name__} is not an object with start, end, text")
        lists = []
        for key in ("start", "end", "text"):
            if key not in entry:
                raise DataError(f"{path}: [{vid!r}]: missing field '{key}' (expected start, end, text lists)")
            if not isinstance(entry[key], list):
                raise bad(path, f"[{vid!r}]", key, entry[key], "a list")
            lists.append(entry[key])
        if not len(lists[0]) == len(lists[1]) == len(lists[2]):
            raise DataError(
                f"{path}: [{vid!r}]: start/end/text have lengths {len(lists[0])}/{len(lists[1])}/{len(lists[2])}, expected equal"
            )
        for i, (s, e, t) in enumerate(zip(*lists, strict=True)):
            where = f"[{vid!r}][{i}]"
            for key, value in (("start", s), ("end", e)):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise bad(path, where, key, value, "a number of seconds")
            s, e = as_float(path, where, "start", s), as_float(path, where, "end", e)
            if e < s:
                raise bad(path, where, "end", e, f"at or after start {s}")
            if not isinstance(t, str):
                raise bad(path, where, "text", t, "a string")
            vids.append(str(vid))
            starts.append(s)
            ends.append(e)
            texts.append(t)
    table = pd.DataFrame({"video_id": vids, "start": starts, "end": ends, "text": texts}, columns=["video_id", "start", "end", "text"])
    table = table.astype({"start": "float64", "end": "float64"})
    return table.sort_values(["video_id", "start"], kind="stable").reset_index(drop=True)
