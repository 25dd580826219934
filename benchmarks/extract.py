"""Feature extraction throughput vs bare PyAV decoding of the same clips, in the same run.

Bare decoding opens each clip, seeks to its window and decodes every video frame of the window
to RGB at native size and every audio frame to an array, nothing else. The pipeline adds seeking, frame sampling, resizing/cropping, resampling,
tokenization, shard writing and the index; with ``workers=0`` both run in one process, so the
ratio isolates our overhead. Also reports the 2-worker pipeline and the shard loader.

Real resolution: the mini world's 64x64 clips say little about the cost of resizing, so a
generated 1280x720 30 fps H.264 + AAC 44.1 kHz clip (``realres.py``: panning texture and moving
objects, 1-3 Mbit/s) is cut into paper-setting windows (32 frames at 10 fps, 224 crops, 48 kHz)
and decoded by the extractor's own ``decode_item`` against bare decoding of the same windows, in
alternating rounds (best of each). The same clip is packed (``packed.pack_item`` at short side
256): source seconds re-encoded per second of one core, and bytes per packed second and per
3.2 s window against the decoded arrays of one clip.

Usage: .venv/bin/python benchmarks/extract.py [--dataset howto100m] [--workdir DIR] [--real-seconds 12.8]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cmgh import config, layout  # noqa: E402
from cmgh.data import datasets  # noqa: E402
from cmgh.data.datasets import items  # noqa: E402
from cmgh.data.extract import decoded  # noqa: E402
from cmgh.data.io import media  # noqa: E402
from cmgh.data.datasets import packing as pack_sources  # noqa: E402
from cmgh.data.extract import packed  # noqa: E402
from cmgh.data.stream.decoded import ShardedClips, make_loader  # noqa: E402
from cmgh.data.synth.generate import synthesize  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realres  # noqa: E402

PAPER = {"frames": 32, "fps": 10.0, "size": 224, "short_side": 256, "sample_rate": 48000}


def bare_decode(clips: list[items.Item], seconds: float) -> None:
    """Seek to each window, decode its video frames to RGB at native size and its audio frames."""
    for item in clips:
        start = item.start or 0.0
        for kind in ("video", "audio"):
            with av.open(str(item.source)) as container:
                stream = getattr(container.streams, kind)[0]
                media.seek(container, stream, start)
                for frame in container.decode(stream):
                    if frame.time is not None and frame.time > start + seconds:
                        break
                    if frame.time is None or frame.time >= start - 1e-6:
                        frame.to_ndarray(format="rgb24") if kind == "video" else frame.to_ndarray()


def real_resolution(work: Path, seconds: float, rounds: int) -> dict[str, float]:
    """Decoded extraction vs bare decode and packing, on one generated 720p clip at paper settings."""
    import torch

    torch.set_num_threads(1)
    source = realres.write_clip(work / "real720p.mp4", seconds)
    window = PAPER["frames"] / PAPER["fps"]
    clips = [items.Item(f"w{k}", source, k * window) for k in range(int(seconds // window))]
    spec = decoded.DecodeSpec(PAPER["frames"], PAPER["fps"], PAPER["size"], PAPER["sample_rate"], 16, 5, with_text=False)
    pspec = packed.PackSpec("howto100m", PAPER["fps"], PAPER["short_side"], PAPER["sample_rate"], 600.0, 23, 10, 64)
    item = pack_sources.PackItem("real720p", "real720p", source, "real720p", source.name)
    bare = ours = pack_time = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        bare_decode(clips, window)
        bare = min(bare, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for clip in clips:
            assert decoded.decode_item(clip, spec).status == "ok"
        ours = min(ours, time.perf_counter() - t0)
        t0 = time.perf_counter()
        result = packed.pack_item(item, pspec)
        pack_time = min(pack_time, time.perf_counter() - t0)
    assert result.mp4 is not None
    decoded_clip = PAPER["frames"] * PAPER["size"] ** 2 * 3 + round(window * PAPER["sample_rate"]) * 4
    per_second = len(result.mp4) / result.info["duration"]
    return {
        "clips": len(clips), "bitrate": source.stat().st_size * 8 / seconds / 1e6,
        "bare": len(clips) / bare, "ours": len(clips) / ours, "pack_speed": seconds / pack_time,
        "packed_per_second": per_second, "packed_per_clip": per_second * window, "decoded_clip": decoded_clip,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="howto100m", choices=datasets.names())
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--real-seconds", type=float, default=12.8, help="length of the generated 720p clip")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="cmgh-bench-extract-"))
    base = [f"paths.data={work / 'data'}", f"paths.features={work / 'features'}"]
    cfg = config.load(overrides=base)
    synthesize(cfg, datasets=[args.dataset, "howto100m"], progress=False)
    decoded.build_vocab(cfg)
    plan = datasets.get(args.dataset).items(layout.dataset_dir(cfg.path("data"), args.dataset), items.WindowSpec.from_features(cfg.features))
    seconds = items.clip_seconds(cfg.features)

    def timed(fn) -> float:
        best = float("inf")
        for _ in range(args.repeats):
            shutil.rmtree(decoded.feature_dir(cfg, args.dataset), ignore_errors=True)
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return best

    bare = timed(lambda: bare_decode(plan, seconds))
    ours = timed(lambda: decoded.extract(cfg, args.dataset, workers=0))
    ours2 = timed(lambda: decoded.extract(cfg, args.dataset, workers=2))

    dataset = ShardedClips(decoded.feature_dir(cfg, args.dataset))
    loader = make_loader(dataset, batch_size=64, shuffle=True, seed=0)
    t0 = time.perf_counter()
    n = 0
    for _ in range(3):
        for batch in loader:
            n += len(batch["index"])
    loader_rate = n / (time.perf_counter() - t0)

    n_clips = len(plan)
    print(f"dataset: {args.dataset}, clips: {n_clips}, window: {seconds:.1f} s")
    print(f"bare PyAV decode (1 process):   {n_clips / bare:8.1f} clips/s")
    print(f"cmgh extract, workers=0:        {n_clips / ours:8.1f} clips/s")
    print(f"cmgh extract, workers=2:        {n_clips / ours2:8.1f} clips/s ({bare / ours2:.2f}x bare decode)")
    print(f"shard loader (batch 64):        {loader_rate:8.0f} samples/s")
    real = real_resolution(work, args.real_seconds, max(2, args.repeats + 1))
    print(f"real resolution: 1280x720 30 fps H.264 {real['bitrate']:.2f} Mbit/s + AAC 44.1 kHz, {real['clips']} windows of 32 frames @ 10 fps -> 224")
    print(f"bare PyAV decode (native size): {real['bare']:8.2f} clips/s")
    print(f"cmgh decode_item:               {real['ours']:8.2f} clips/s")
    print(f"packing at 256p / 10 fps:       {real['pack_speed']:8.2f} source s per s (one core)")
    print(f"packed: {real['packed_per_second'] / 1e3:.1f} kB per second, {real['packed_per_clip'] / 1e3:.0f} kB per 3.2 s window; "
          f"decoded clip {real['decoded_clip'] / 1e6:.2f} MB")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"extraction / bare decode throughput: mini {bare / ours:.2f}, real 720p {real['ours'] / real['bare']:.2f} (target >= 0.7); "
        f"packed / decoded bytes per clip {real['packed_per_clip'] / real['decoded_clip']:.3f} (1/{real['decoded_clip'] / real['packed_per_clip']:.0f})"
    )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
