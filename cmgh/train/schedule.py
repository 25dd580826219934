"""Learning-rate schedule of VATT: linear warm-up to the peak, then a quarter-period cosine to ``min_lr``."""

from __future__ import annotations

import math

import torch


def lr_at(step: int, peak: float, min_lr: float, warmup: int, total: int) -> float:
    """VATT (Akbari et al. 2021, Sec. 4.1): warm-up, then ``min + (peak - min) * cos(pi/2 * progress)``."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_lr + (peak - min_lr) * math.cos(0.5 * math.pi * progress)


def build_scheduler(optimizer: torch.optim.Optimizer, peak: float, min_lr: float, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, peak, min_lr, warmup, total) / peak)
