"""``noise_labels.csv``: the generated ground truth of a pre-training corpus's noise (which clips'
audio and text are misaligned), and the one rule that matches a clip to it.

No training code reads it except the oracle control: the noise-detection evaluation labels clips
with :func:`match_clips`, and a pre-training stream built with ground truth on (only when the
curriculum's scorer needs it) puts the flags of :class:`ClipTruth` in the batch under
:data:`MISALIGNED_AUDIO` and :data:`MISALIGNED_TEXT`.

The rule: a clip takes the label of the segment of its video that contains the clip's midpoint
(``start <= mid < end``, the first such segment in file order). It holds for extracted windows
that coincide with the generator's segments, for windows of any other length inside them, and
for the random windows a packed corpus draws.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from cmgh import layout
from cmgh.data.io.tables import as_flag, as_float, as_text, parse_csv, read_text, seconds, write_csv
from cmgh.layout import PathLike

NOISE_COLUMNS = ("video_id", "clip_start", "clip_end", "audio_aligned", "text_aligned")
MISALIGNED_AUDIO = "misaligned_audio"  # batch key, [B] bool: the triplet's audio belongs to another concept
MISALIGNED_TEXT = "misaligned_text"  # batch key, [B] bool: the triplet's captions belong to another concept
TRUTH_KEYS = (MISALIGNED_AUDIO, MISALIGNED_TEXT)


def write_noise_labels(path: PathLike, table: pd.DataFrame) -> Path:
    rows = (
        (r.video_id, seconds(r.clip_start), seconds(r.clip_end), int(r.audio_aligned), int(r.text_aligned))
        for r in table.itertuples(index=False)
    )
    return write_csv(path, NOISE_COLUMNS, rows)


def read_noise_labels(path: PathLike) -> pd.DataFrame:
    """Ground truth of the pre-training noise: for the noise-detection evaluation and the oracle control only."""
    path, text = read_text(path, f"noise labels ({layout.NOISE_LABELS})")
    parsers = {"video_id": as_text, "clip_start": as_float, "clip_end": as_float, "audio_aligned": as_flag, "text_aligned": as_flag}
    table = parse_csv(path, text, NOISE_COLUMNS, parsers)
    return table.astype({"clip_start": "float64", "clip_end": "float64", "audio_aligned": "int64", "text_aligned": "int64"})


def labelled_corpora(data_root: PathLike, datasets: Iterable[str]) -> list[str]:
    """The corpora of ``datasets`` that have a ground truth: a generated corpus's own
    ``noise_labels.csv`` (:func:`cmgh.layout.noise_labels`; HowTo100M's, YouTube-8M's), the one
    rule for where a corpus's truth is. Downloaded corpora and AudioSet have none."""
    return [name for name in datasets if layout.noise_labels(data_root, name).is_file()]


def corpus_labels(data_root: PathLike, dataset: str) -> pd.DataFrame:
    """A corpus's ``noise_labels.csv`` (one-line DataError when it has none)."""
    return read_noise_labels(layout.noise_labels(data_root, dataset))


class ClipTruth:
    """A corpus's ground truth by video, for clip lookups: :meth:`misaligned` is the matching rule."""

    def __init__(self, labels: pd.DataFrame) -> None:
        self._videos: dict[Hashable, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        for video, rows in labels.groupby("video_id", sort=False):  # rows keep their file order
            self._videos[video] = (
                rows["clip_start"].to_numpy(dtype=np.float64),
                rows["clip_end"].to_numpy(dtype=np.float64),
                rows["audio_aligned"].to_numpy() == 0,
                rows["text_aligned"].to_numpy() == 0,
            )

    def has(self, video_id: Hashable) -> bool:
        return video_id in self._videos

    def misaligned(self, video_id: Hashable, clip_start: float, clip_end: float) -> tuple[bool, bool] | None:
        """``(audio, text)`` misaligned for the clip, from the segment of its video containing its
        midpoint; ``None`` when no segment does (or the video has no labels)."""
        segments = self._videos.get(video_id)
        if segments is None:
            return None
        starts, ends, audio, text = segments
        mid = 0.5 * (float(clip_start) + float(clip_end))
        hits = np.flatnonzero((starts <= mid) & (mid < ends))
        if hits.size == 0:
            return None
        j = int(hits[0])
        return bool(audio[j]), bool(text[j])


def match_clips(clips: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Per clip of ``clips`` (``item_id, video_id, clip_start, clip_end``): ``item_id, audio, text``
    (1 = misaligned) by :meth:`ClipTruth.misaligned`, in ``clips``' order; unmatched clips and
    repeated item ids are left out."""
    truth = ClipTruth(labels)
    rows = zip(clips["item_id"], clips["video_id"], clips["clip_start"], clips["clip_end"], strict=True)
    found = [(item, flags) for item, video, start, end in rows if (flags := truth.misaligned(video, start, end)) is not None]
    table = pd.DataFrame({
        "item_id": pd.Series([item for item, _ in found], dtype=clips["item_id"].dtype),
        "audio": np.array([int(a) for _, (a, _) in found], dtype=np.int64),
        "text": np.array([int(t) for _, (_, t) in found], dtype=np.int64),
    })  # fmt: skip
    return table.drop_duplicates("item_id").reset_index(drop=True)
