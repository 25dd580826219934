"""Streaming loader throughput at paper settings, vs bare PyAV decoding of the same windows.

Packs generated clips (smooth panning texture + moving shapes, 10 fps, keyframe every second, AAC
mono at 48 kHz) into a tar shard per the packed contract: at short side 256 (the packed path),
once as x264 ``veryfast`` and once with ``tune=fastdecode``, plus a real-resolution 720p 30 fps
clip. On one core (affinity pinned, one torch thread) it times ``PackedSource.sample`` (window
draw, decode, captions, augmentation) against bare decoding of the same windows (seek, decode
the window's video frames to RGB and its audio frames, nothing else), and torchvision's
``transforms.v2`` pipeline against the augmentation the loader uses.

Usage: .venv/bin/python benchmarks/stream.py [--clips 4] [--seconds 20] [--samples 40]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cmgh import config, layout  # noqa: E402
from cmgh.data import augment, media  # noqa: E402
from cmgh.data.sources import PackedSource  # noqa: E402
from cmgh.data.text import Vocabulary  # noqa: E402
from tests.data.packed_shards import PackedClip, write_packed  # noqa: E402


def texture(height: int, width: int, seed: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    out = torch.zeros(3, height, width)
    for cell, amp in ((96, 1.0), (24, 0.5), (6, 0.25)):
        noise = torch.rand(1, 3, height // cell + 2, width // cell + 2, generator=gen)
        out += amp * torch.nn.functional.interpolate(noise, size=(height, width), mode="bicubic", align_corners=False)[0]
    out = (out - out.min()) / (out.max() - out.min()) * 255
    return out.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def frames(n: int, height: int, width: int, fps: int, seed: int):
    speed = width / 10  # pixels per second of panning
    tex = texture(height + 64, width + int(speed * n / fps) + 8, seed)
    yy, xx = np.mgrid[0:height, 0:width]
    for t in range(n):
        x0 = int(speed * t / fps)
        frame = tex[32 : 32 + height, x0 : x0 + width].copy()
        for j, colour in enumerate(((230, 60, 50), (40, 200, 90), (250, 240, 230))):
            cx = int(width * (0.5 + 0.35 * np.sin(t / fps * (0.7 + 0.3 * j) + j + seed)))
            cy = int(height * (0.5 + 0.3 * np.cos(t / fps * (0.5 + 0.2 * j) + 2 * j)))
            if j % 2:
                frame[(np.abs(xx - cx) < height // 10) & (np.abs(yy - cy) < height // 12)] = colour
            else:
                frame[(xx - cx) ** 2 + (yy - cy) ** 2 < (height // 9) ** 2] = colour
        yield frame


def encode(height: int, width: int, fps: int, seconds: float, sample_rate: int, seed: int, crf: int, tune: str | None) -> bytes:
    """H.264 (keyframe every second) + AAC mono, as the packed writer encodes."""
    n = int(seconds * fps)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = (0.3 * np.sin(2 * np.pi * (220 + 40 * seed) * t) + 0.05 * np.random.default_rng(seed).standard_normal(t.size)).astype(np.float32)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        vstream = media.add_video_stream(container, fps, width, height)
        options = dict(vstream.codec_context.options)
        options.update({"crf": str(crf), "x264-params": f"mbtree=0:keyint={fps}:min-keyint={fps}:scenecut=0"})
        if tune:
            options["tune"] = tune
        vstream.codec_context.options = options
        astream = media.add_audio_stream(container, sample_rate)
        astream.codec_context.bit_rate = 64000
        for i, image in enumerate(frames(n, height, width, fps, seed)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(vstream.encode(frame))
        container.mux(vstream.encode(None))
        media.mux_audio(container, astream, wave.reshape(1, -1), sample_rate, "mono")
        container.mux(astream.encode(None))
    return buf.getvalue()


def bare_decode(data: bytes, start: float, num_frames: int, fps: float) -> None:
    """Seek, decode the window's video frames to RGB (one reformatter) and its audio frames."""
    stop = start + num_frames / fps
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        media.seek(container, stream, start)
        reformatter = av.video.reformatter.VideoReformatter()
        for frame in container.decode(stream):
            if frame.time is not None and frame.time >= start - 1e-6:
                reformatter.reformat(frame, format="rgb24").to_ndarray()
            if frame.time is not None and frame.time >= stop:
                break
        astream = container.streams.audio[0]
        media.seek(container, astream, start)
        for frame in container.decode(astream):
            frame.to_ndarray()
            if frame.time is not None and frame.time > stop:
                break


def measure(source: PackedSource, data: list[bytes], samples: int) -> tuple[float, float]:
    """Seconds per clip: the loader, then bare decoding of the windows the loader drew."""
    source.sample(0, np.random.default_rng(999))
    starts, rows = [], []
    t0 = time.perf_counter()
    for k in range(samples):
        i = k % len(source)
        starts.append(source.sample(i, np.random.default_rng(k))["clip_start"])
        rows.append(i)
    loader = (time.perf_counter() - t0) / samples
    spec = source.spec
    t0 = time.perf_counter()
    for i, start in zip(rows, starts, strict=True):
        bare_decode(data[i], start, spec.frames, spec.fps)
    return loader, (time.perf_counter() - t0) / samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--core", type=int, default=0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.core})
    torch.set_num_threads(1)
    cfg = config.load(config.REPO_ROOT / "config" / "paper.yaml")
    feats = cfg.to_dict()["features"]
    video, sr = feats["video"], int(feats["audio"]["sample_rate"])
    window = video["frames"] / video["fps"]
    work = Path(tempfile.mkdtemp(prefix="cmgh-bench-stream-"))
    vocab = Vocabulary.build(["put the pan on the stove", "stir the sauce slowly"], 64)
    captions = [{"start": s, "end": s + 2.0, "text": "stir the sauce slowly"} for s in np.arange(0, args.seconds, 2.0)]

    def pack(name: str, height: int, width: int, fps: int, clips: int, tune: str | None) -> tuple[PackedSource, list[bytes]]:
        data = [encode(height, width, fps, args.seconds, sr, seed, crf=23, tune=tune) for seed in range(clips)]
        packed = [PackedClip(f"{name}{i}", d, args.seconds, fps, sr, True, captions) for i, d in enumerate(data)]
        folder = write_packed(layout.packed_dir(work, name), "howto100m", packed, shard_size=clips)
        return PackedSource(folder, feats, vocab, dataset="howto100m"), data

    width256 = media.scaled_size(1280, 720, int(video["short_side"]))[0]
    rows = []
    for name, height, width, fps, clips, tune in (
        ("p256", video["short_side"], width256, int(video["fps"]), args.clips, None),
        ("p256fd", video["short_side"], width256, int(video["fps"]), args.clips, "fastdecode"),
        ("r720", 720, 1280, 30, 1, None),
    ):
        source, data = pack(name, height, width, fps, clips, tune)
        loader, bare = measure(source, data, args.samples if clips > 1 else max(8, args.samples // 4))
        kbps = np.mean([len(d) for d in data]) * 8 / args.seconds / 1000
        packed_bytes = np.mean([len(d) for d in data]) * window / args.seconds
        rows.append((name, height, width, fps, tune, kbps, packed_bytes, loader, bare))

    decoded = video["frames"] * video["size"] ** 2 * 3 + window * sr * 4
    clip = np.stack(list(frames(video["frames"], video["short_side"], width256, 10, 0)))
    spec = augment.AugmentSpec.from_features(feats)
    params = [augment.draw(spec, np.random.default_rng(k), *clip.shape[1:3]) for k in range(10)]
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    a = feats["augment"]
    compose = v2.Compose([
        v2.RandomResizedCrop(video["size"], scale=tuple(a["crop_scale"]), ratio=tuple(a["crop_ratio"]), antialias=True),
        v2.RandomHorizontalFlip(a["flip"]),
        v2.ColorJitter(a["brightness"], a["contrast"], a["saturation"], a["hue"]),
    ])
    tv = tv_tensors.Video(torch.from_numpy(clip).permute(0, 3, 1, 2))
    t0 = time.perf_counter()
    for _ in params:
        compose(tv)
    t_v2 = (time.perf_counter() - t0) / len(params)
    t0 = time.perf_counter()
    for p in params:
        augment.apply(clip, p, video["size"])
    t_ours = (time.perf_counter() - t0) / len(params)

    print(f"paper settings: {video['frames']} frames @ {video['fps']} fps, {video['size']}^2, {window:.1f} s @ {sr} Hz, augmentation on; 1 core")
    print(f"augmentation 32x{video['short_side']}x{width256} -> {video['size']}: transforms.v2 Compose {t_v2 * 1e3:.1f} ms, loader's {t_ours * 1e3:.1f} ms")
    print(f"decoded clip: {decoded / 1e6:.2f} MB")
    for name, height, width, fps, tune, kbps, packed_bytes, loader, bare in rows:
        print(
            f"{name:7s} {width}x{height}@{fps} {tune or 'veryfast':10s} {kbps:6.0f} kbit/s  packed {packed_bytes / 1e3:7.1f} kB/clip "
            f"(1/{decoded / packed_bytes:.0f} of decoded)  loader {1 / loader:5.1f} clips/s  bare decode {1 / bare:5.1f} clips/s  "
            f"loader/bare {loader / bare:.2f}x"
        )
    best = min(rows[:2], key=lambda r: r[7])
    print(f"256p packed ({best[4] or 'veryfast'}): {1 / best[7]:.1f} clips/s per core (target >= 50), loader {best[7] / best[8]:.2f}x bare decode (target <= 1.3)")


if __name__ == "__main__":
    main()
