"""The generator's per-sample ground truth a batch may carry: read in training only by the control scorers.

A synthetic corpus with a ``noise_labels.csv`` knows which triplets it misaligned. The data
plumbing puts those flags in the batch under the two keys below (bool ``[B]``, this process's
rows); a corpus without ground truth leaves them out. The ``oracle`` and ``quality`` curriculum
scorers (:mod:`cmgh.harmonize.scorers`) are the only readers in training: they are positive
controls, and they refuse to run on a batch without the flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from cmgh.errors import DataError

MISALIGNED_AUDIO = "misaligned_audio"  # [B] bool: the triplet's audio belongs to another concept
MISALIGNED_TEXT = "misaligned_text"  # [B] bool: the triplet's captions belong to another concept
KEYS = (MISALIGNED_AUDIO, MISALIGNED_TEXT)


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
    present = [key for key in KEYS if key in batch]
    if not present:
        return None
    if len(present) < len(KEYS):
        missing = next(key for key in KEYS if key not in batch)
        raise DataError(f"the batch carries {present[0]} but not {missing}: ground truth comes as both flags or neither")
    return GroundTruth(batch[MISALIGNED_AUDIO].bool(), batch[MISALIGNED_TEXT].bool())


def missing_truth(scorer: str) -> DataError:
    """The one-line refusal of a ground-truth scorer on data without ground truth."""
    return DataError(
        f"pretrain.curriculum.scorer: {scorer!r} reads the generator's ground truth "
        f"(batch keys {MISALIGNED_AUDIO}, {MISALIGNED_TEXT}), and this corpus has no noise_labels.csv"
    )
