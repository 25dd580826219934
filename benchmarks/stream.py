"""Streaming loader throughput at paper settings, vs bare PyAV decoding of the same windows.

Generated sources (smooth panning texture + moving shapes, AAC mono at 48 kHz) in the HowTo100M
layout are packed by the real writer (:func:`cmgh.data.extract.packed.pack`, paper settings): 256p/10 fps
sources once with x264 ``veryfast`` as is and once with ``tune=fastdecode`` (the packed default),
a real-resolution 720p 30 fps source, and one long 256p source (``--long-seconds``). On one core
(affinity pinned, one torch thread) it times ``PackedSource.sample`` (window draw, decode,
captions, augmentation) in several configurations, alternated sample by sample so that the shared
machine's load hits them alike: the whole mp4 member read per sample vs a byte range, the colour
jitter in the loader vs on the training device (the default; its CPU cost per batch is measured
apart), against bare decoding of the same windows (seek, decode the window's video frames to RGB
and its audio frames, nothing else).

Usage: .venv/bin/python benchmarks/stream.py [--clips 4] [--seconds 20] [--samples 40] [--long-seconds 300]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cmgh import config  # noqa: E402
from cmgh.data.stream import augment  # noqa: E402
from cmgh.data.io import media  # noqa: E402
from cmgh.data.stream.packed import PackedSource  # noqa: E402
from cmgh.data.extract.text import Vocabulary  # noqa: E402
from tests.data.corpus_trees import Clip, pack_tree, write_howto100m  # noqa: E402

PAPER = config.REPO_ROOT / "config" / "paper.yaml"


class WholeMember(PackedSource):
    """The loader before byte-range reads: every sample reads its mp4 member whole."""

    def _mp4(self, i: int) -> bytes:
        return self._read(i, "mp4")


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


def tone(seconds: float, sample_rate: int, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    noise = 0.05 * np.random.default_rng(seed).standard_normal(t.size)
    return (0.3 * np.sin(2 * np.pi * (220 + 40 * seed) * t) + noise).astype(np.float32)


def sources(base: Path, name: str, height: int, width: int, fps: int, seconds: float, count: int, sample_rate: int) -> Path:
    """``count`` generated sources in the HowTo100M layout under ``base/data`` with a caption every 2 s."""
    clips = {f"{name}{i}": Clip(frames(int(seconds * fps), height, width, fps, i), fps, tone(seconds, sample_rate, i), sample_rate) for i in range(count)}
    captions = {vid: [(float(s), float(s) + 2.0, "stir the sauce slowly") for s in np.arange(0, seconds, 2.0)] for vid in clips}
    write_howto100m(base / "data" / "howto100m", clips, captions)
    return base


def packed(base: Path, tune: str | None) -> Path:
    return pack_tree(base, "howto100m", ["features.shard_size=64"], tune=tune, config_file=PAPER)


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


def member_bytes(source: PackedSource, i: int) -> bytes:
    return source._read(i, "mp4")


def alternate(configs: dict[str, PackedSource], samples: int) -> dict[str, dict[str, float]]:
    """Seconds and shard bytes per sample of each configuration, sample by sample in turn, plus
    the bare decode of the windows drawn (from the member's bytes in memory)."""
    times = {name: 0.0 for name in configs}
    bare = {name: 0.0 for name in configs}
    read = {name: 0 for name in configs}
    for source in configs.values():
        source.sample(0, np.random.default_rng(999))  # open the shards, warm the caches
    for k in range(samples):
        for name, source in configs.items():
            i = k % len(source)
            before = source.bytes_read
            t0 = time.perf_counter()
            sample = source.sample(i, np.random.default_rng(k))
            times[name] += time.perf_counter() - t0
            read[name] += source.bytes_read - before
            data = member_bytes(source, i)
            t0 = time.perf_counter()
            bare_decode(data, sample["clip_start"], source.spec.frames, source.spec.fps)
            bare[name] += time.perf_counter() - t0
    return {name: {"loader": times[name] / samples, "bare": bare[name] / samples, "bytes": read[name] / samples} for name in configs}


def device_jitter_cost(feats: dict, batch: int, repeats: int, batched: bool) -> float:
    """Seconds of :func:`augment.apply_jitter` per batch of ``batch`` paper-size clips on this CPU core."""
    video = feats["video"]
    spec = augment.AugmentSpec.from_features(feats)
    clips = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (batch, video["frames"], video["size"], video["size"], 3), dtype=np.uint8))
    maps = torch.stack([torch.from_numpy(augment.jitter_map(augment.draw(spec, np.random.default_rng(k), 256, 456))) for k in range(batch)])
    augment.apply_jitter(clips, maps, batched)
    t0 = time.perf_counter()
    for _ in range(repeats):
        augment.apply_jitter(clips, maps, batched)
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--long-seconds", type=float, default=300.0)
    parser.add_argument("--batch", type=int, default=8, help="clips per batch for the device jitter's CPU cost")
    parser.add_argument("--core", type=int, default=0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.core})
    torch.set_num_threads(1)
    cfg = config.load(PAPER)
    feats = cfg.to_dict()["features"]
    video, sr = feats["video"], int(feats["audio"]["sample_rate"])
    window = video["frames"] / video["fps"]
    fps = int(video["fps"])
    work = Path(tempfile.mkdtemp(prefix="cmgh-bench-stream-"))
    vocab = Vocabulary.build(["put the pan on the stove", "stir the sauce slowly"], 64)
    width256 = media.scaled_size(1280, 720, int(video["short_side"]))[0]

    t0 = time.perf_counter()
    p256 = sources(work / "p256", "p", video["short_side"], width256, fps, args.seconds, args.clips, sr)
    fast256 = work / "p256fd"
    fast256.mkdir()
    (fast256 / "data").symlink_to(p256 / "data")
    veryfast, fastdecode = packed(p256, None), packed(fast256, "fastdecode")
    r720 = packed(sources(work / "r720", "r", 720, 1280, 30, args.seconds, 1, 44100), "fastdecode")
    long = packed(sources(work / "long", "l", video["short_side"], width256, fps, args.long_seconds, 1, sr), "fastdecode")
    print(f"sources generated and packed in {time.perf_counter() - t0:.0f} s", flush=True)

    def src(folder: Path, cls: type[PackedSource] = PackedSource, device_jitter: bool = True) -> PackedSource:
        return cls(folder, feats, vocab, dataset="howto100m", device_jitter=device_jitter)

    loaders = alternate({
        "veryfast, whole member, jitter in loader": src(veryfast, WholeMember, False),
        "veryfast, byte range, jitter on device": src(veryfast),
        "fastdecode, byte range, jitter in loader": src(fastdecode, device_jitter=False),
        "fastdecode, byte range, jitter on device": src(fastdecode),
    }, args.samples)
    real = alternate({"720p30 source packed to 256p": src(r720)}, max(8, args.samples // 4))
    longs = alternate({"whole member": src(long, WholeMember), "byte range": src(long)}, max(8, args.samples // 2))
    per_batch = {way: device_jitter_cost(feats, args.batch, 3, way == "batched torch") for way in ("numpy per clip", "batched torch")}

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
    aug = {}
    for name, fn in (
        ("transforms.v2 Compose", lambda p: compose(tv)),
        ("loader's with jitter", lambda p: augment.apply(clip, p, video["size"])),
        ("loader's without jitter", lambda p: augment.apply(clip, p, video["size"], jitter=False)),
    ):
        t0 = time.perf_counter()
        for p in params:
            fn(p)
        aug[name] = (time.perf_counter() - t0) / len(params)

    def kbps(folder: Path) -> float:
        index = pd.read_parquet(folder / "index.parquet")
        return float((index["mp4_size"] * 8 / index["duration"]).mean() / 1000)

    print(f"paper settings: {video['frames']} frames @ {video['fps']} fps, {video['size']}^2, {window:.1f} s @ {sr} Hz, augmentation on; 1 core")
    print("augmentation 32x%dx%d -> %d: %s" % (video["short_side"], width256, video["size"], ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in aug.items())))
    for way, cost in per_batch.items():
        print(f"device jitter on this CPU core, {way}: {cost * 1e3:.0f} ms per batch of {args.batch} ({cost / args.batch * 1e3:.1f} ms per clip)")
    print(f"decoded clip: {decoded / 1e6:.2f} MB")
    for folder, tune in ((veryfast, "veryfast"), (fastdecode, "fastdecode"), (r720, "720p30 -> 256p fastdecode")):
        rate = kbps(folder)
        clip_bytes = rate * 1000 / 8 * window
        print(f"packed 256p {tune:26s} {rate:6.0f} kbit/s  {clip_bytes / 1e3:7.1f} kB per 3.2 s window (1/{decoded / clip_bytes:.0f} of decoded)")
    size = float(pd.read_parquet(long / "index.parquet")["mp4_size"].iloc[0])
    print(f"long clip ({args.long_seconds:.0f} s at 256p, member {size / 1e6:.1f} MB):")
    for name, m in longs.items():
        print(f"  {name:14s} {m['bytes'] / 1e3:9.1f} kB read per sample  {m['loader'] * 1e3:6.1f} ms per sample  ({1 / m['loader']:.1f} clips/s)")
    for name, m in {**loaders, **real}.items():
        print(f"{name:42s} loader {1 / m['loader']:5.1f} clips/s  bare decode {1 / m['bare']:5.1f} clips/s  loader/bare {m['loader'] / m['bare']:.2f}x  "
              f"{m['bytes'] / 1e3:6.1f} kB read per sample")
    old, new = loaders["veryfast, whole member, jitter in loader"], loaders["fastdecode, byte range, jitter on device"]
    print(f"new/old loader clips/s: {old['loader'] / new['loader']:.2f}x; jitter on device vs in loader (fastdecode): "
          f"{loaders['fastdecode, byte range, jitter in loader']['loader'] / new['loader']:.2f}x")
    print(f"256p packed (fastdecode, byte range, jitter on device): {1 / new['loader']:.1f} clips/s per core (target >= 50), "
          f"loader {new['loader'] / new['bare']:.2f}x bare decode (target <= 1.3)")


if __name__ == "__main__":
    main()
