"""The generator's per-sample ground truth a batch may carry: read in training only by the control scorers.

A synthetic corpus with a ``noise_labels.csv`` knows which triplets it misaligned. The data
plumbing (a pre-training stream built with ground truth on, :mod:`cmgh.data.datasets.noise_labels`,
which names the two keys) puts those flags in the batch (bool ``[B]``, this process's rows); rows
of a corpus without ground truth get False, and a stream without ground truth leaves them out. The ``oracle`` and ``quality`` curriculum
scorers (:mod:`cmgh.harmonize.scorers`) are the only readers in training: they are positive
controls, and they refuse to run on a batch without the flags.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from cmgh.data.datasets.noise_labels import MISALIGNED_AUDIO, MISALIGNED_TEXT, TRUTH_KEYS
from cmgh.errors import DataError
from cmgh.layout import NOISE_LABELS


@dataclass(frozen=True)
class GroundTruth:
    """Which of this batch's triplets the generator misaligned, per pair."""

    audio: Tensor  # [B] bool
    text: Tensor  # [B] bool

    @property
    def misaligned(self) -> Tensor:
        """``[B]`` bool: either pair misaligned."""
        return self.audio | self.text


def ground_truth(batch: Mapping[str, Any]) -> GroundTruth | None:
    """The batch's flags, or ``None`` when it carries none (a corpus without ``noise_labels.csv``)."""
    present = [key for key in TRUTH_KEYS if key in batch]
    if not present:
        return None
    if len(present) < len(TRUTH_KEYS):
        missing = next(key for key in TRUTH_KEYS if key not in batch)
        raise DataError(f"the batch carries {present[0]} but not {missing}: ground truth comes as both flags or neither")
    return GroundTruth(batch[MISALIGNED_AUDIO].bool(), batch[MISALIGNED_TEXT].bool())


def missing_truth(scorer: str, corpora: Sequence[str] = ()) -> DataError:
    """The one-line refusal of a ground-truth scorer on data without ground truth (``corpora``: the
    run's, when the refusal comes before training, from its set-up)."""
    what = f"none of the run's corpora ({', '.join(corpora)}) has" if corpora else "this corpus has"
    return DataError(
        f"pretrain.curriculum.scorer: {scorer!r} reads the generator's ground truth "
        f"(batch keys {MISALIGNED_AUDIO}, {MISALIGNED_TEXT}), and {what} a {NOISE_LABELS}: "
        f"the oracle and quality scorers need generated data (data.source: synth)"
    )
