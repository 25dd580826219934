"""Streaming loader throughput at paper settings, vs bare PyAV decoding of the same windows.

Generated sources (smooth panning texture + moving shapes, AAC mono at 48 kHz) in the HowTo100M
layout are packed by the real writer (:func:`cmgh.data.extract.packed.pack`, paper settings): 256p/10 fps
sources once with x264 ``veryfast`` as is and once with ``tune=fastdecode`` (the packed default),
a real-resolution 720p 30 fps source, and one long 256p source (``--long-seconds``). On one core
(affinity pinned, one torch thread) it times ``PackedSource.sample`` (window draw, decode with the
random resized crop and flip done by FFmpeg, captions) in several configurations, alternated sample
by sample (the order rotating every round) so that the shared machine's load hits them alike: the
whole mp4 member read per sample vs a byte range, the colour jitter in the loader vs on the training
device (the default; its CPU cost per batch is measured apart), the previous augmentation (full RGB
frames resized by torchvision), against bare decoding of the same windows (seek, decode the window's
video frames to RGB and its audio frames, nothing else). Each is timed in CPU seconds of this process
(what one core delivers, whatever else runs on the machine) and in wall seconds. It also prints how
far FFmpeg's crop/scale is from torchvision's (mean absolute difference on the decoded frames), and,
where ``torchcodec`` imports, torchcodec's decoding of the same windows.

Usage: .venv/bin/python benchmarks/stream.py [--clips 4] [--seconds 20] [--samples 60] [--long-seconds 300]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cmgh import config  # noqa: E402
from cmgh.data.extract.text import Vocabulary  # noqa: E402
from cmgh.data.io import media  # noqa: E402
from cmgh.data.io.frames import to_rgb  # noqa: E402
from cmgh.data.stream import augment  # noqa: E402
from cmgh.data.stream.packed import MemberFile, PackedSource, caption_track  # noqa: E402
from tests.data.corpus_trees import Clip, pack_tree, write_howto100m  # noqa: E402

PAPER = Path(__file__).resolve().parents[1] / "config" / "paper.yaml"  # the checkout this benchmark runs from
GRAY = np.asarray(augment.GRAY, dtype=np.float32)


class WholeMember(PackedSource):
    """The loader before byte-range reads: every sample reads its mp4 member whole."""

    def _mp4(self, i: int) -> bytes:
        return self._read(i, "mp4")


class TorchvisionCrop(PackedSource):
    """The augmentation before FFmpeg cropped: the window decoded to full RGB frames, then
    torchvision's antialiased resized crop, flip and (here) the colour map on the loader's side."""

    def sample(self, i: int, rng: np.random.Generator) -> dict[str, Any]:
        spec = self.spec
        meta = json.loads(self._read(i, "json"))
        start = float(rng.uniform(0.0, max(0.0, float(self._columns["duration"][i]) - spec.seconds)))
        mp4 = self._mp4(i)
        video, audio = media.decode_clip(mp4, start, spec.frames, spec.fps, spec.sample_rate, short_side=spec.short_side, name="member")
        self.bytes_read += mp4.bytes_read if isinstance(mp4, MemberFile) else 0
        params = augment.draw(spec.augment, rng, video.shape[1], video.shape[2])
        text, mask = self._captions(caption_track(meta, "member"), start, start + spec.seconds)
        jitter = augment.jitter_map(params) if self.device_jitter else augment.IDENTITY
        return {"video": augment.apply(video, params, spec.augment.size, jitter=not self.device_jitter), "jitter": torch.from_numpy(jitter.copy()),
                "audio": torch.from_numpy(audio), "text": text, "text_mask": mask, "clip_start": start}


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


def timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float, float]:
    """``fn(*args)``, its CPU seconds (this process: the pinned core's work) and wall seconds."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.process_time() - cpu, time.perf_counter() - wall


def alternate(configs: dict[str, PackedSource], samples: int) -> dict[str, dict[str, float]]:
    """Per configuration and sample: the loader's CPU and wall seconds, those of the bare decode of
    the window it drew (from the member's bytes in memory) and the shard bytes it read. Loader and
    bare decode swap order every sample and the configurations rotate every round."""
    names = list(configs)
    sums = {name: dict.fromkeys(("cpu", "wall", "bare_cpu", "bare_wall", "bytes"), 0.0) for name in names}
    for source in configs.values():
        source.sample(0, np.random.default_rng(999))  # open the shards, warm the caches
    for k in range(samples):
        for name in names[k % len(names) :] + names[: k % len(names)]:
            source, m, i = configs[name], sums[name], k % len(configs[name])
            data = source._read(i, "mp4")
            before = source.bytes_read
            start = float(np.random.default_rng(k).uniform(0.0, max(0.0, float(source._columns["duration"][i]) - source.spec.seconds)))
            steps = [("", partial(source.sample, i, np.random.default_rng(k))), ("bare_", partial(bare_decode, data, start, source.spec.frames, source.spec.fps))]
            for prefix, fn in steps if k % 2 else steps[::-1]:
                _, cpu, wall = timed(fn)
                m[prefix + "cpu"] += cpu
                m[prefix + "wall"] += wall
            m["bytes"] += source.bytes_read - before
    return {name: {key: value / samples for key, value in m.items()} for name, m in sums.items()}


def filter_difference(folder: Path, feats: dict, draws: int) -> tuple[float, float]:
    """Mean absolute difference (RGB, and luma alone) between FFmpeg's crop/scale/flip of packed
    windows and torchvision's antialiased resized crop of the same windows' full RGB frames."""
    spec = augment.AugmentSpec.from_features(feats)
    index = pd.read_parquet(folder / "index.parquet")
    source = PackedSource(folder, feats, Vocabulary.build(["a"], 8), dataset="howto100m")
    video = feats["video"]
    rgb, luma = [], []
    for k in range(draws):
        i = k % len(index)
        data = source._read(i, "mp4")
        start = float(np.random.default_rng(k).uniform(0, float(index.at[i, "duration"]) - video["frames"] / video["fps"]))
        plain, _ = media.decode_clip(data, start, video["frames"], video["fps"], 48000, short_side=video["short_side"])
        params = augment.draw(spec, np.random.default_rng(k), *plain.shape[1:3])
        box = augment.crop_of(params, spec.size)
        ours, _ = media.decode_clip(data, start, video["frames"], video["fps"], 48000, short_side=video["short_side"], crop=lambda h, w, box=box: box)
        theirs = augment.apply(plain, params, spec.size, jitter=False).numpy()
        rgb.append(np.abs(ours.astype(np.int16) - theirs).mean())
        luma.append(np.abs(ours.astype(np.float32) @ GRAY - theirs.astype(np.float32) @ GRAY).mean())
    return float(np.mean(rgb)), float(np.mean(luma))


def torchcodec_windows(folder: Path, feats: dict, samples: int) -> str:
    """torchcodec decoding the same windows (32 frames at the sample times, RGB; the audio at
    48 kHz mono), alone and with its crop+resize decoder transforms, against bare PyAV decoding."""
    try:
        from torchcodec import transforms as tc_transforms
        from torchcodec.decoders import AudioDecoder, VideoDecoder
    except (ImportError, RuntimeError, OSError) as exc:
        reason = " ".join(str(exc).split())[:160]
        return f"torchcodec: not measured ({type(exc).__name__}: {reason})"
    video, sr = feats["video"], int(feats["audio"]["sample_rate"])
    index = pd.read_parquet(folder / "index.parquet")
    source = PackedSource(folder, feats, Vocabulary.build(["a"], 8), dataset="howto100m")
    seconds = video["frames"] / video["fps"]

    def decode(data: bytes, start: float, crop: list | None = None) -> None:
        times = [start + j / video["fps"] for j in range(video["frames"])]
        VideoDecoder(data, seek_mode="approximate", dimension_order="NHWC", transforms=crop).get_frames_played_at(times)
        AudioDecoder(data, sample_rate=sr, num_channels=1).get_samples_played_in_range(start, start + seconds)

    sums = dict.fromkeys(("bare", "torchcodec", "torchcodec crop+resize"), 0.0)
    for k in range(samples):
        i = k % len(index)
        data = source._read(i, "mp4")
        start = float(np.random.default_rng(k).uniform(0, float(index.at[i, "duration"]) - seconds))
        crop = [tc_transforms.RandomCrop((200, 300)), tc_transforms.Resize((video["size"], video["size"]))]
        ways = [("bare", partial(bare_decode, data, start, video["frames"], video["fps"])), ("torchcodec", partial(decode, data, start)),
                ("torchcodec crop+resize", partial(decode, data, start, crop))]
        for name, fn in ways[k % 3 :] + ways[: k % 3]:
            sums[name] += timed(fn)[1]
    import torchcodec

    return (f"torchcodec {torchcodec.__version__} on the same windows (CPU time): {sums['torchcodec'] / sums['bare']:.2f}x bare PyAV decode, "
            f"{sums['torchcodec crop+resize'] / sums['bare']:.2f}x with its crop+resize decoder transforms")


def device_jitter_cost(feats: dict, batch: int, repeats: int, batched: bool) -> float:
    """Seconds of :func:`augment.apply_jitter` per batch of ``batch`` paper-size clips on this CPU core."""
    video = feats["video"]
    spec = augment.AugmentSpec.from_features(feats)
    clips = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (batch, video["frames"], video["size"], video["size"], 3), dtype=np.uint8))
    maps = torch.stack([torch.from_numpy(augment.jitter_map(augment.draw(spec, np.random.default_rng(k), 256, 456))) for k in range(batch)])
    augment.apply_jitter(clips, maps, batched)
    t0 = time.process_time()
    for _ in range(repeats):
        augment.apply_jitter(clips, maps, batched)
    return (time.process_time() - t0) / repeats


def augmentation_costs(folder: Path, feats: dict, draws: int) -> dict[str, float]:
    """CPU seconds per clip of the crop/resize/flip of one decoded window's frames, each way."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    video, a = feats["video"], feats["augment"]
    spec = augment.AugmentSpec.from_features(feats)
    data = PackedSource(folder, feats, Vocabulary.build(["a"], 8), dataset="howto100m")._read(0, "mp4")
    with av.open(io.BytesIO(data)) as container:
        decoded = [frame for _, frame in zip(range(video["frames"]), container.decode(video=0), strict=False)]
    clip = to_rgb(decoded)
    compose = v2.Compose([
        v2.RandomResizedCrop(video["size"], scale=tuple(a["crop_scale"]), ratio=tuple(a["crop_ratio"]), antialias=True),
        v2.RandomHorizontalFlip(a["flip"]),
        v2.ColorJitter(a["brightness"], a["contrast"], a["saturation"], a["hue"]),
    ])
    tv = tv_tensors.Video(torch.from_numpy(clip).permute(0, 3, 1, 2))
    ways: dict[str, Callable[[augment.AugmentParams], Any]] = {
        "FFmpeg crop+scale+flip+RGB (the loader's)": lambda p: to_rgb(decoded, crop=lambda h, w: augment.crop_of(p, video["size"])),
        "RGB frames + torchvision resized crop + flip (before)": lambda p: augment.apply(to_rgb(decoded), p, video["size"], jitter=False),
        "transforms.v2 Compose with jitter, frames already RGB": lambda p: compose(tv),
    }
    out = dict.fromkeys(ways, 0.0)
    for k in range(draws):
        params = augment.draw(spec, np.random.default_rng(k), *clip.shape[1:3])
        for name, fn in ways.items():
            out[name] += timed(fn, params)[1] / draws
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--long-seconds", type=float, default=300.0)
    parser.add_argument("--batch", type=int, default=8, help="clips per batch for the device jitter's CPU cost")
    parser.add_argument("--core", type=int, default=0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.core})
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="cmgh-bench-stream-") as work:
        run(args, Path(work))


def run(args: argparse.Namespace, work: Path) -> None:
    cfg = config.load(PAPER)
    feats = cfg.to_dict()["features"]
    video, sr = feats["video"], int(feats["audio"]["sample_rate"])
    window = video["frames"] / video["fps"]
    fps = int(video["fps"])
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

    main_way = "fastdecode, byte range, jitter on device"
    loaders = alternate({
        "veryfast, whole member, jitter in loader": src(veryfast, WholeMember, False),
        "veryfast, byte range, jitter on device": src(veryfast),
        "fastdecode, byte range, jitter in loader": src(fastdecode, device_jitter=False),
        "fastdecode, byte range, torchvision crop (before)": src(fastdecode, TorchvisionCrop),
        main_way: src(fastdecode),
    }, args.samples)
    real = alternate({"720p30 source packed to 256p": src(r720)}, max(8, args.samples // 2))
    longs = alternate({"whole member": src(long, WholeMember), "byte range": src(long)}, max(8, args.samples // 2))
    per_batch = {way: device_jitter_cost(feats, args.batch, 3, way == "batched torch") for way in ("numpy per clip", "batched torch")}
    aug = augmentation_costs(fastdecode, feats, 10)
    differences = {name: filter_difference(folder, feats, 8) for name, folder in (("256p sources", fastdecode), ("720p30 sources", r720))}
    codec = torchcodec_windows(fastdecode, feats, max(12, args.samples // 2))

    decoded = video["frames"] * video["size"] ** 2 * 3 + window * sr * 4

    def kbps(folder: Path) -> float:
        index = pd.read_parquet(folder / "index.parquet")
        return float((index["mp4_size"] * 8 / index["duration"]).mean() / 1000)

    print(f"paper settings: {video['frames']} frames @ {video['fps']} fps, {video['size']}^2, {window:.1f} s @ {sr} Hz, augmentation on; 1 core; "
          "CPU time of this process (wall time in brackets: the machine's other load)")
    print(f"crop/resize/flip of {video['frames']} decoded {video['short_side']}x{width256} frames -> {video['size']}^2: "
          + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in aug.items()))
    for name, (rgb, luma) in differences.items():
        print(f"FFmpeg's crop/scale (bilinear, on YUV) vs torchvision's antialiased resized crop of RGB frames, {name}: "
              f"mean |difference| {rgb:.2f} of 255 per channel, {luma:.2f} in luma")
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
        print(f"  {name:14s} {m['bytes'] / 1e3:9.1f} kB read per sample  {m['cpu'] * 1e3:6.1f} ms per sample  ({1 / m['cpu']:.1f} clips/s)")
    for name, m in {**loaders, **real}.items():
        print(f"{name:50s} loader {1 / m['cpu']:5.1f} clips/s ({1 / m['wall']:5.1f})  bare decode {1 / m['bare_cpu']:5.1f} ({1 / m['bare_wall']:5.1f})  "
              f"loader/bare {m['cpu'] / m['bare_cpu']:.2f}x ({m['wall'] / m['bare_wall']:.2f}x)  {m['bytes'] / 1e3:6.1f} kB read per sample")
    old, new = loaders["veryfast, whole member, jitter in loader"], loaders[main_way]
    print(f"new/old loader clips/s: {old['cpu'] / new['cpu']:.2f}x; FFmpeg crop vs torchvision's: "
          f"{loaders['fastdecode, byte range, torchvision crop (before)']['cpu'] / new['cpu']:.2f}x; jitter on device vs in loader (fastdecode): "
          f"{loaders['fastdecode, byte range, jitter in loader']['cpu'] / new['cpu']:.2f}x")
    print(codec)
    print(f"256p packed ({main_way}): {1 / new['cpu']:.1f} clips/s per core (target >= 40; {1 / new['wall']:.1f} by the wall clock), "
          f"loader {new['cpu'] / new['bare_cpu']:.2f}x bare decode (target <= 1.3; {new['wall'] / new['bare_wall']:.2f}x by the wall clock)")


if __name__ == "__main__":
    main()
