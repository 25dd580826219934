"""Learning-rate schedules: linear warm-up to the peak, then a cosine decay to a floor.

Pre-training (VATT) decays over a quarter period of the cosine; the Kinetics fine-tuning of the
evaluation uses the common half-period ("cosine annealing") decay. Both are :func:`warmup_cosine`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Decay = Literal["quarter", "half"]


def warmup_cosine(step: int, peak: float, floor: float, warmup: int, total: int, decay: Decay = "quarter") -> float:
    """``peak * (step + 1) / warmup`` during warm-up, then ``floor + (peak - floor) * d(progress)`` with
    ``d = cos(pi/2 * p)`` (``quarter``) or ``(1 + cos(pi * p)) / 2`` (``half``); progress is clamped to 1."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, total - warmup)
    elapsed = min(step - warmup, span)
    if decay == "quarter":
        return floor + (peak - floor) * math.cos(0.5 * math.pi * (elapsed / span))
    if decay == "half":
        return floor + (peak - floor) * (0.5 * (1.0 + math.cos(math.pi * elapsed / span)))
    raise ValueError(f"decay {decay!r} is not one of quarter, half")


def lr_at(step: int, peak: float, min_lr: float, warmup: int, total: int) -> float:
    """VATT (Akbari et al. 2021, Sec. 4.1): warm-up, then ``min + (peak - min) * cos(pi/2 * progress)``."""
    return warmup_cosine(step, peak, min_lr, warmup, total, "quarter")


def build_scheduler(optimizer: torch.optim.Optimizer, peak: float, min_lr: float, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, peak, min_lr, warmup, total) / peak)


def build_factor_scheduler(optimizer: torch.optim.Optimizer, warmup: int, total: int, decay: Decay) -> torch.optim.lr_scheduler.LambdaLR:
    """The optimizer's own lr scaled by :func:`warmup_cosine` with peak 1 and floor 0."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, 1.0, 0.0, warmup, total, decay))
