"""A real-resolution test clip: 1280x720 H.264 at 30 fps + AAC at 44.1 kHz, like a HowTo100M video.

The content is what a camera sees, not per-pixel noise (which no codec compresses and no real
video looks like): a smooth multi-scale texture panned at a few pixels per frame, with textured
objects moving across it. At ``encode.write_mp4``'s crf that encodes at
roughly 1-3 Mbit/s, the range of 720p uploads. Frames are generated one at a time, so a long clip
never sits in memory. Usage as a script: ``realres.py OUT.mp4 [--seconds 30] [--no-audio]``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cmgh.data.io import encode, media  # noqa: E402

WIDTH, HEIGHT, FPS, SAMPLE_RATE = 1280, 720, 30, 44100


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth RGB texture (octaves of upsampled noise, coarse ones strongest): uint8 [H,W,3]."""
    total = torch.zeros(1, 3, height, width)
    for cell, amplitude in ((96, 1.0), (32, 0.5), (10, 0.22), (4, 0.08)):
        coarse = torch.from_numpy(rng.standard_normal((1, 3, height // cell + 2, width // cell + 2)).astype(np.float32))
        total += amplitude * torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    image = 128 + 40 * total
    return image.clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()


def frames(seconds: float, seed: int = 0, width: int = WIDTH, height: int = HEIGHT, fps: int = FPS) -> Iterator[np.ndarray]:
    """``round(seconds * fps)`` frames of panning texture with moving objects, one at a time."""
    rng = np.random.default_rng(seed)
    count = int(round(seconds * fps))
    pan = np.array([3.0, 1.0])  # pixels per frame (x, y)
    margin = (int(pan[1] * count) + 2, int(pan[0] * count) + 2)
    background = _texture(rng, height + margin[0], width + margin[1])
    objects = []
    for _ in range(5):
        h, w = (int(v) for v in rng.integers(60, 200, size=2))
        objects.append({
            "patch": _texture(rng, h, w),
            "pos": rng.uniform([0, 0], [width - w, height - h]),
            "vel": rng.uniform(-6, 6, size=2),
            "size": (h, w),
        })
    for i in range(count):
        x, y = int(pan[0] * i), int(pan[1] * i)
        image = background[y : y + height, x : x + width].copy()
        for obj in objects:
            h, w = obj["size"]
            obj["pos"] += obj["vel"]
            for axis, limit in ((0, width - w), (1, height - h)):
                if not 0 <= obj["pos"][axis] <= limit:
                    obj["vel"][axis] *= -1
                    obj["pos"][axis] = min(max(obj["pos"][axis], 0), limit)
            left, top = int(obj["pos"][0]), int(obj["pos"][1])
            image[top : top + h, left : left + w] = obj["patch"]
        yield image


def audio(seconds: float, seed: int = 0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Speech-like mono audio: a few harmonics with a syllable-rate envelope, plus soft noise."""
    rng = np.random.default_rng(seed + 1)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    wave = 0.2 * voice * envelope + 0.02 * rng.standard_normal(len(t))
    return np.clip(wave, -1, 1).astype(np.float32)


def write_clip(path: Path, seconds: float, with_audio: bool = True, seed: int = 0) -> Path:
    """A 720p30 H.264 (+ AAC 44.1 kHz unless ``with_audio`` is False) clip of ``seconds``."""
    wave = audio(seconds, seed) if with_audio else None
    return encode.write_mp4(path, frames(seconds, seed), FPS, wave, SAMPLE_RATE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-audio", action="store_true")
    args = parser.parse_args()
    path = write_clip(args.out, args.seconds, not args.no_audio, args.seed)
    info = media.probe(path)
    rate = path.stat().st_size * 8 / info["duration"] / 1e6
    print(f"{path}: {info['width']}x{info['height']} {info['fps']:g} fps, {info['duration']:.1f} s, {rate:.2f} Mbit/s, audio {info['has_audio']}")


if __name__ == "__main__":
    main()
