"""The forward pass cut at the meeting point: encode, detach the shared representation(s), heads, per-sample losses.

The harmonized backward (:mod:`cmgh.harmonize.harmonizer`) needs the graph cut where the two objectives
meet: the heads read a detached leaf, so that per-sample gradients there cost a pass through the heads
only. Under data parallelism the embeddings are gathered so that the negatives are the global batch's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from torch import Tensor, nn

from cmgh import losses
from cmgh.harmonize.gradients import detach_meeting_point


@dataclass
class ForwardOutput:
    """A VATT forward pass cut at the meeting point, with the per-sample losses."""

    video_rep: Tensor  # attached backbone output
    meet: Tensor  # detached leaf the heads read
    l_va: Tensor  # [B]
    l_vt: Tensor  # [B] (0 where no text)
    valid_vt: Tensor  # [B] bool
    hidden: Tensor | None  # input of the last blocks (parameters meeting point)
    outputs: dict[str, Tensor]
    cut: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)  # detached rep -> (attached, leaf)
    valid_va: Tensor | None = None  # [B] bool, rows with audio; None: every row (the batch said nothing else)


class RowGather(Protocol):
    """Concatenates a tensor's rows over data-parallel ranks (differentiably); ``rows`` = this rank's."""

    rows: slice

    def __call__(self, x: Tensor) -> Tensor: ...


def forward_losses(
    model: nn.Module,
    batch: Mapping[str, Tensor],
    temperature: float,
    hidden_blocks: int = 0,
    gather: RowGather | None = None,
    detach: Sequence[str] = ("video_rep",),
) -> ForwardOutput:
    """``model.encode`` -> cut at ``video_rep`` (and the other ``detach`` keys) -> ``model.heads`` -> NCE and MIL-NCE per sample.

    ``model`` is a :class:`cmgh.models.VATT` (anything with ``encode``/``heads``). ``has_text``
    defaults to all True when absent from the batch. Under data parallelism ``gather`` brings
    every rank's embeddings together so that the negatives are the global batch's, as in VATT;
    the returned losses are this rank's rows of the global per-sample losses, so they equal
    what one process would compute on the whole batch.
    """
    reps = model.encode(batch, hidden_blocks=hidden_blocks) if hidden_blocks else model.encode(batch)
    cut, leaves = dict(reps), {}
    for key in detach:
        cut, attached = detach_meeting_point(cut, key)
        leaves[key] = (attached, cut[key])
    video_rep = leaves["video_rep"][0]
    z = model.heads(cut)
    has_text, has_audio = batch.get("has_text"), batch.get("has_audio")
    valid_vt = losses.text_valid(batch["text_mask"], has_text)
    if gather is None:
        valid_va = None if has_audio is None or bool(has_audio.all()) else has_audio.bool()
        l_va = losses.nce(z["z_va_video"], z["z_va_audio"], temperature, valid=valid_va)
        l_vt = losses.mil_nce(z["z_vat_video"], z["z_vat_text"], batch["text_mask"], temperature, valid=valid_vt)
    else:  # every rank gathers has_audio when the stream sends it: the collectives stay in step
        g = {k: gather(v) for k, v in z.items()}
        mask_all, valid_all = gather(batch["text_mask"]), gather(valid_vt)
        audio_all = None if has_audio is None else gather(has_audio.bool())
        l_va = losses.nce(g["z_va_video"], g["z_va_audio"], temperature, valid=audio_all)[gather.rows]
        l_vt = losses.mil_nce(g["z_vat_video"], g["z_vat_text"], mask_all, temperature, valid=valid_all)[gather.rows]
        valid_va = None if has_audio is None or bool(audio_all.all()) else has_audio.bool()
    return ForwardOutput(video_rep, cut["video_rep"], l_va, l_vt, valid_vt, reps.get("video_hidden"), {**cut, **z}, leaves, valid_va)
