"""The generator's ground truth of a streamed clip, for the oracle control only.

A source built with a corpus's :class:`~cmgh.data.datasets.noise_labels.ClipTruth` (which
:mod:`cmgh.train.setup` hands over only when the curriculum's scorer needs ground truth) adds
each sample's flags under the batch keys of :mod:`cmgh.data.datasets.noise_labels`, matched by
the noise evaluation's own rule (the segment containing the clip's midpoint).
"""

from __future__ import annotations

from collections.abc import Hashable

from cmgh import layout
from cmgh.data.datasets.noise_labels import MISALIGNED_AUDIO, MISALIGNED_TEXT, ClipTruth
from cmgh.errors import DataError


def clip_flags(truth: ClipTruth, dataset: str, video_id: Hashable, clip_start: float, clip_end: float) -> dict[str, bool]:
    """The sample's two flags; a clip its corpus's labels do not describe is a one-line DataError."""
    found = truth.misaligned(video_id, clip_start, clip_end)
    if found is None:
        raise DataError(
            f"{dataset}: no segment of video {video_id!r} in its {layout.NOISE_LABELS} contains the clip "
            f"{clip_start:.3f}-{clip_end:.3f} s (the labels do not describe this corpus's clips: regenerate it)"
        )
    return {MISALIGNED_AUDIO: found[0], MISALIGNED_TEXT: found[1]}


def check_videos(truth: ClipTruth, dataset: str, video_ids: list[Hashable]) -> None:
    """Every video of a corpus has labels (before a run, not sample by sample)."""
    unlabelled = [v for v in video_ids if not truth.has(v)]
    if unlabelled:
        raise DataError(
            f"{dataset}: {len(unlabelled)} of {len(video_ids)} videos have no rows in its {layout.NOISE_LABELS} "
            f"(e.g. {unlabelled[0]!r}): the labels do not describe this corpus (regenerate it)"
        )
