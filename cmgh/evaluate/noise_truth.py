"""Ground truth of the pre-training noise and the indicators scored against it, defined once.

Both noise evaluations use this module: the final-checkpoint noise detection
(:mod:`cmgh.evaluate.detection`) and noise detection over training (:mod:`cmgh.evaluate.detection_over_training`,
on the trainer's score dumps, for every corpus with a ground truth). A clip takes the label of the ``noise_labels.csv`` segment of its
video that contains the clip's midpoint: this holds for extracted windows that coincide with the
generator's segments and for windows of any other length inside them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import pandas as pd

from cmgh import layout
from cmgh.data.datasets import noise_labels
from cmgh.errors import DataError
from cmgh.evaluate import TARGETS
from cmgh.layout import PathLike

DUMP_COLUMNS = {"cos": "cos_meeting_point"}  # score-dump column -> indicator name

X = TypeVar("X")


def loss_total(l_va: X, l_vt: X, vt_weight: float) -> X:
    """The pre-training objective per triplet, ``L_va + vt_weight * L_vt`` (tensors, arrays or columns)."""
    return l_va + vt_weight * l_vt  # type: ignore[operator]


def label_clips(index: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Per clip of ``index``: ``item_id, audio, text, either`` (1 = misaligned), from the segment of
    ``labels`` (noise_labels.csv) of the same video containing the clip's midpoint. Unmatched clips are left out."""
    clips = index[["item_id", "video_id", "clip_start", "clip_end"]].copy()
    clips["mid"] = 0.5 * (clips["clip_start"] + clips["clip_end"])
    merged = clips.merge(labels, on="video_id", suffixes=("", "_gt"))
    inside = (merged["mid"] >= merged["clip_start_gt"]) & (merged["mid"] < merged["clip_end_gt"])
    merged = merged[inside].drop_duplicates("item_id")
    if merged.empty:
        raise DataError(f"{layout.NOISE_LABELS} matches no extracted clip (expected video_id and clip windows of the same corpus)")
    merged["audio"] = 1 - merged["audio_aligned"].astype(int)
    merged["text"] = 1 - merged["text_aligned"].astype(int)
    merged["either"] = merged[["audio", "text"]].max(axis=1)
    return merged[["item_id", *TARGETS]].reset_index(drop=True)


def labelled_corpora(data_root: PathLike, datasets: Iterable[str]) -> list[str]:
    """The corpora of ``datasets`` that have a ground truth: a generated corpus's own
    ``noise_labels.csv`` (:func:`cmgh.layout.noise_labels`; HowTo100M's, YouTube-8M's), the one
    rule for where a corpus's truth is. Downloaded corpora and AudioSet have none."""
    return [name for name in datasets if layout.noise_labels(data_root, name).is_file()]


def corpus_labels(data_root: PathLike, dataset: str) -> pd.DataFrame:
    """A corpus's ``noise_labels.csv`` (one-line DataError when it has none)."""
    return noise_labels.read_noise_labels(layout.noise_labels(data_root, dataset))


def clip_truth(data_root: PathLike, index: pd.DataFrame, dataset: str = "howto100m") -> pd.DataFrame:
    """:func:`label_clips` with the corpus's own ``noise_labels.csv``."""
    return label_clips(index, corpus_labels(data_root, dataset))
