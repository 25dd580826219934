"""VATT's per-clip augmentation: random resized crop, horizontal flip, colour jitter.

Parameters are drawn from the sample's own numpy generator (torchvision's ``RandomResizedCrop``
and ``ColorJitter`` rules, re-implemented on that generator), so the global torch RNG is never
touched and a sample's augmentation does not depend on the worker that loads it. Every frame of
a clip gets the same parameters.

The packed stream crops, resizes and flips inside FFmpeg while decoding: :func:`crop_of` hands
:func:`cmgh.data.io.media.decode_clip` the box drawn from the decoded frames' size, cut and scaled
with swscale's antialiased bilinear filter on the YUV frame (2-3 levels of 255 per channel from
torchvision's on RGB, 0.5 in luma: :mod:`cmgh.data.io.frames`), and :func:`colour` does the rest.
:func:`apply` is the same augmentation of RGB frames already in memory, with
``torchvision.transforms.v2.functional`` (uint8 channels-last, crop before resize). The colour
jitter with ``hue == 0`` (the default) is one fused affine map per frame: brightness, contrast and
saturation are each ``y = a*x + b*gray(x) + o``, a family closed under composition, so any order
of the three is ``y = alpha*x + beta*gray(x) + gamma*mean(gray(x))`` with three numbers per clip
(:func:`jitter_map`; torchvision's four passes clamp in between, the fused map clamps once, which
differs only where an intermediate value saturates). The loader ships those numbers in the batch
(``jitter`` [B,3]) and :func:`apply_jitter` applies them as one batched torch op on the training
device right before the step: on a GPU it is negligible, and on one loader core it cost as much as
the rest of the augmentation. ``hue > 0`` takes torchvision's own functions in the drawn order in
the loader (an HSV round trip per frame: costly) and ships the identity map.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cmgh.data.io.frames import Crop

GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)


@functools.cache
def _torchvision() -> tuple[Any, Any, dict[str, Any]]:
    """torchvision's tv_tensors, functional ops and the jitter ops by name, imported on first use: only
    the loader-side paths (decoded clips, hue > 0, the reference) need them, and importing all of
    torchvision costs ~1.8 s of CPU in every job that reads features (the evaluations)."""
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as F

    ops = {BRIGHTNESS: F.adjust_brightness, CONTRAST: F.adjust_contrast, SATURATION: F.adjust_saturation, HUE: F.adjust_hue}
    return tv_tensors, F, ops


@dataclass(frozen=True)
class AugmentSpec:
    """``features.augment`` (its defaults live in the config schema) and the crop side."""

    size: int
    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float]
    flip: float
    brightness: float
    contrast: float
    saturation: float
    hue: float

    @classmethod
    def from_features(cls, features: Mapping[str, Any]) -> AugmentSpec:
        aug = features["augment"]
        return cls(
            size=int(features["video"]["size"]),
            crop_scale=(float(aug["crop_scale"][0]), float(aug["crop_scale"][1])),
            crop_ratio=(float(aug["crop_ratio"][0]), float(aug["crop_ratio"][1])),
            flip=float(aug["flip"]),
            brightness=float(aug["brightness"]),
            contrast=float(aug["contrast"]),
            saturation=float(aug["saturation"]),
            hue=float(aug["hue"]),
        )


@dataclass(frozen=True)
class AugmentParams:
    top: int
    left: int
    height: int
    width: int
    flip: bool
    order: tuple[int, ...]  # jitter operations in the order applied
    factors: tuple[float, float, float, float]  # brightness, contrast, saturation, hue


def draw(spec: AugmentSpec, rng: np.random.Generator, height: int, width: int) -> AugmentParams:
    """torchvision's RandomResizedCrop.get_params and ColorJitter.get_params, on ``rng``."""
    top, left, h, w = _crop_box(rng, height, width, spec.crop_scale, spec.crop_ratio)
    flip = bool(rng.random() < spec.flip)
    order = tuple(int(i) for i in rng.permutation(4))

    def factor(x: float) -> float:
        return float(rng.uniform(max(0.0, 1 - x), 1 + x)) if x > 0 else 1.0

    b, c, s = factor(spec.brightness), factor(spec.contrast), factor(spec.saturation)
    hue = float(rng.uniform(-spec.hue, spec.hue)) if spec.hue > 0 else 0.0
    return AugmentParams(top, left, h, w, flip, order, (b, c, s, hue))


def _crop_box(rng: np.random.Generator, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def crop_of(params: AugmentParams, size: int) -> Crop:
    """The crop box and flip of ``params`` for FFmpeg to cut, scale to ``size`` and mirror while decoding."""
    return Crop(params.top, params.left, params.height, params.width, size, params.flip)


def apply(video: np.ndarray | torch.Tensor, params: AugmentParams, size: int, jitter: bool = True) -> torch.Tensor:
    """uint8 [T,H,W,3] -> uint8 [T,size,size,3] with ``params`` (torchvision's resized crop on the RGB
    frames, then :func:`colour`); ``jitter=False`` leaves the fused (hue-free) colour jitter to
    :func:`apply_jitter` with :func:`jitter_map` (hue > 0 is applied here anyway)."""
    tv_tensors, F, _ = _torchvision()
    frames = tv_tensors.Video(torch.as_tensor(video).permute(0, 3, 1, 2))  # channels-last view, no copy
    out = F.resized_crop(frames, params.top, params.left, params.height, params.width, [size, size], antialias=True)
    hwc = out.as_subclass(torch.Tensor).permute(0, 2, 3, 1)  # contiguous: resize wrote channels-last
    if params.flip:
        hwc = torch.flip(hwc, dims=[2])  # 7x faster than numpy's copy of a reversed 3-byte-pixel view
    return colour(hwc, params, jitter)


def colour(hwc: torch.Tensor, params: AugmentParams, jitter: bool = True) -> torch.Tensor:
    """The colour jitter of ``params`` on uint8 [T,H,W,3] frames already cropped, resized and flipped:
    the fused hue-free map (only with ``jitter``; else the device applies it), or with ``hue > 0``
    torchvision's four operations in the drawn order."""
    if params.factors[HUE] == 0.0:
        return torch.from_numpy(_fused_jitter(hwc.numpy(), jitter_map(params))) if jitter else hwc.contiguous()
    tv_tensors, _, jitter_ops = _torchvision()
    chw = tv_tensors.Video(hwc.contiguous().permute(0, 3, 1, 2))
    for op in params.order:
        if op != HUE and params.factors[op] == 1.0:
            continue
        chw = jitter_ops[op](chw, params.factors[op])
    return chw.as_subclass(torch.Tensor).permute(0, 2, 3, 1).contiguous()


def reference(video: np.ndarray | torch.Tensor, params: AugmentParams, size: int) -> torch.Tensor:
    """The same parameters through torchvision's functional ops as they are (each op clamps): the
    baseline that :func:`apply` is measured and checked against."""
    tv_tensors, F, jitter_ops = _torchvision()
    frames = tv_tensors.Video(torch.as_tensor(video).permute(0, 3, 1, 2))
    out = F.resized_crop(frames, params.top, params.left, params.height, params.width, [size, size], antialias=True)
    if params.flip:
        out = F.horizontal_flip(out)
    for op in params.order:
        out = jitter_ops[op](out, params.factors[op])
    return out.as_subclass(torch.Tensor).permute(0, 2, 3, 1).contiguous()


def jitter_map(params: AugmentParams) -> np.ndarray:
    """float32 ``[alpha, beta, gamma]`` of the fused hue-free jitter in the drawn order: per frame
    ``y = alpha*x + beta*gray(x) + gamma*mean(gray(x))``. Gray is linear, so the mean gray that
    contrast blends towards after earlier ops is ``(alpha + beta + gamma)`` times the input's.
    The identity ``[1, 0, 0]`` when ``hue > 0`` (then :func:`apply` does the whole jitter)."""
    b, c, s, hue = params.factors
    alpha, beta, gamma = 1.0, 0.0, 0.0
    if hue == 0.0:
        for op in params.order:
            if op == BRIGHTNESS:
                alpha, beta, gamma = alpha * b, beta * b, gamma * b
            elif op == SATURATION:
                alpha, beta = alpha * s, beta * s + (1 - s) * (alpha + beta)
            elif op == CONTRAST:
                gamma = gamma * c + (1 - c) * (alpha + beta + gamma)
                alpha, beta = alpha * c, beta * c
    return np.array([alpha, beta, gamma], dtype=np.float32)


IDENTITY = np.array([1.0, 0.0, 0.0], dtype=np.float32)
_CHUNK = 8  # clips per float pass of apply_jitter: bounds its float32 copy (~150 MB at paper size)


def apply_jitter(video: torch.Tensor, maps: torch.Tensor, batched: bool | None = None) -> torch.Tensor:
    """uint8 [B,T,H,W,3] with each clip's :func:`jitter_map` (float [B,3]) applied to all its
    frames, on ``video``'s device: the batched form of the loader's fused jitter (same math).

    ``batched`` (default: off the CPU) runs it as batched torch ops; on a CPU the loader's numpy
    form per clip is ~8x cheaper (torch's uint8 -> float and 3-wide matmul are slow there).
    """
    maps = maps.to(device=video.device, dtype=torch.float32)
    moved = (maps != torch.as_tensor(IDENTITY, device=video.device)).any(dim=1)
    if not bool(moved.any()):
        return video
    if not (video.device.type != "cpu" if batched is None else batched):
        out = video.clone()
        for i in torch.nonzero(moved).flatten().tolist():
            out[i] = torch.from_numpy(_fused_jitter(video[i].numpy(), maps[i].numpy()))
        return out
    weights = torch.tensor(GRAY, dtype=torch.float32, device=video.device)
    out = video.clone()
    rows = torch.nonzero(moved).flatten()
    for lo in range(0, len(rows), _CHUNK):
        idx = rows[lo : lo + _CHUNK]
        x = video[idx].float()
        alpha, beta, gamma = (maps[idx, j].view(-1, 1, 1, 1) for j in range(3))
        gray = x @ weights  # [b,T,H,W]
        mean_gray = gray.mean(dim=(2, 3), keepdim=True)
        shift = gray.mul_(beta).add_(gamma * mean_gray)
        x.mul_(alpha.unsqueeze(-1)).add_(shift.unsqueeze(-1)).clamp_(0, 255)
        out[idx] = x.to(torch.uint8)
    return out


def _fused_jitter(hwc: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """:func:`apply_jitter` for one clip in numpy on the interleaved layout (the loader's way when
    asked to jitter): on one core 4-5x cheaper than torchvision's four blends (and torch's own
    uint8 -> float conversion was 10x numpy's here)."""
    alpha, beta, gamma = (float(v) for v in coefficients)
    if (alpha, beta, gamma) == (1.0, 0.0, 0.0):
        return np.ascontiguousarray(hwc)
    x = hwc.astype(np.float32)
    gray = x @ np.asarray(GRAY, dtype=np.float32)  # [T,H,W]
    mean_gray = gray.reshape(len(gray), -1).mean(axis=1)  # [T]
    gray *= np.float32(beta)
    gray += (np.float32(gamma) * mean_gray).astype(np.float32)[:, None, None]
    x *= np.float32(alpha)
    for channel in range(3):  # per-channel strided adds: a size-3 broadcast is 3x slower
        view = x[..., channel]
        np.add(view, gray, out=view)
    np.clip(x, 0, 255, out=x)
    return x.astype(np.uint8)
