"""Ground truth of the pre-training noise and the indicators scored against it, defined once.

Both noise evaluations use this module: the final-checkpoint noise detection
(:mod:`cmgh.evaluate.detection`) and noise detection over training (:mod:`cmgh.evaluate.detection_over_training`,
on the trainer's score dumps, for every corpus with a ground truth). A clip takes the label of the ``noise_labels.csv`` segment of its
video that contains the clip's midpoint: this holds for extracted windows that coincide with the
generator's segments and for windows of any other length inside them. The rule and where a
corpus's truth is (:func:`~cmgh.data.datasets.noise_labels.labelled_corpora`) live in
:mod:`cmgh.data.datasets.noise_labels`, beside the file's reader, where the oracle control's data
plumbing uses them too.
"""

from __future__ import annotations

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
    ``labels`` (noise_labels.csv) of the same video containing the clip's midpoint
    (:func:`cmgh.data.datasets.noise_labels.match_clips`, the rule training's oracle control uses too).
    Unmatched clips are left out."""
    truth = noise_labels.match_clips(index, labels)
    if truth.empty:
        raise DataError(f"{layout.NOISE_LABELS} matches no extracted clip (expected video_id and clip windows of the same corpus)")
    truth["either"] = truth[["audio", "text"]].max(axis=1)
    return truth[["item_id", *TARGETS]]


def clip_truth(data_root: PathLike, index: pd.DataFrame, dataset: str = "howto100m") -> pd.DataFrame:
    """:func:`label_clips` with the corpus's own ``noise_labels.csv``."""
    return label_clips(index, noise_labels.corpus_labels(data_root, dataset))
