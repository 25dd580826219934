"""A tiny two-objective problem for harmonized-backward tests: a linear "backbone" and two linear heads.

``video_rep = x W`` (``W`` the one backbone parameter), the heads read a detached leaf of it, and
the per-sample losses are VATT's NCE and MIL-NCE against fixed audio and caption embeddings.
Small enough that per-triplet gradients can be taken one row at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cmgh import losses
from cmgh.harmonize import detach_meeting_point

TAU = 0.1


@dataclass
class Problem:
    x: Tensor  # [B,D] inputs
    weight: Tensor  # [D,D] the backbone parameter
    head_va: Tensor  # [D,E]
    head_vt: Tensor  # [D,E]
    audio: Tensor  # [B,E]
    text: Tensor  # [B,K,E]
    text_mask: Tensor  # [B,K]
    valid: Tensor  # [B] rows with text

    def losses_at(self, rep: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample ``(l_va, l_vt)`` for representation rows ``rep``."""
        l_va = losses.nce(rep @ self.head_va, self.audio, TAU)
        l_vt = losses.mil_nce(rep @ self.head_vt, self.text, self.text_mask, TAU, valid=self.valid)
        return l_va, l_vt

    def forward(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(video_rep, meet, l_va, l_vt)`` as :func:`cmgh.harmonize.forward_losses` cuts them."""
        self.weight.grad = None
        cut, video_rep = detach_meeting_point({"video_rep": self.x @ self.weight})
        meet = cut["video_rep"]
        return (video_rep, meet, *self.losses_at(meet))


def problem(b: int = 6, d: int = 5, e: int = 4, k: int = 2, seed: int = 0, no_text: tuple[int, ...] = ()) -> Problem:
    g = torch.Generator().manual_seed(seed)
    valid = torch.ones(b, dtype=torch.bool)
    valid[list(no_text)] = False
    return Problem(
        torch.randn(b, d, generator=g),
        torch.randn(d, d, generator=g).requires_grad_(True),
        torch.randn(d, e, generator=g),
        torch.randn(d, e, generator=g),
        torch.randn(b, e, generator=g),
        torch.randn(b, k, e, generator=g),
        torch.ones(b, k, dtype=torch.bool),
        valid,
    )
