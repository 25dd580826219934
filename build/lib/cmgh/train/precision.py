"""Numeric precision: bf16 autocast on CUDA, fp32 on CPU (CPU bf16 matmuls are slower here)."""

from __future__ import annotations

import contextlib

import torch


def use_bf16(device: torch.device, precision: str) -> bool:
    if precision == "fp32":
        return False
    if precision == "bf16":
        return device.type == "cuda" or device.type == "cpu"
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[object]:
    if use_bf16(device, precision):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
