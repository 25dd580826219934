"""Feature extraction throughput vs bare PyAV decoding of the same clips, in the same run.

Bare decoding opens each clip and decodes every video and audio frame of its window to arrays,
nothing else. The pipeline adds seeking, frame sampling, resizing/cropping, resampling,
tokenization, shard writing and the index; with ``workers=0`` both run in one process, so the
ratio isolates our overhead. Also reports the 2-worker pipeline and the shard loader.

Usage: .venv/bin/python benchmarks/extract.py [--dataset howto100m] [--workdir DIR]
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
from cmgh.data import DATASETS  # noqa: E402
from cmgh.data import features, items  # noqa: E402
from cmgh.data.datasets import ShardedClips, make_loader  # noqa: E402
from cmgh.data.synth import synthesize  # noqa: E402


def bare_decode(clips: list[items.Item], seconds: float) -> None:
    for item in clips:
        start = item.start or 0.0
        with av.open(str(item.source)) as container:
            for frame in container.decode(video=0):
                if frame.time is not None and frame.time > start + seconds:
                    break
                frame.to_ndarray(format="rgb24")
        with av.open(str(item.source)) as container:
            for frame in container.decode(audio=0):
                if frame.time is not None and frame.time > start + seconds:
                    break
                frame.to_ndarray()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="howto100m", choices=DATASETS)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="cmgh-bench-extract-"))
    base = [f"paths.data={work / 'data'}", f"paths.features={work / 'features'}"]
    cfg = config.load(overrides=base)
    synthesize(cfg, datasets=[args.dataset, "howto100m"], progress=False)
    features.build_vocab(cfg)
    plan = items.plan(args.dataset, layout.dataset_dir(cfg.path("data"), args.dataset), cfg.features)
    seconds = items.clip_seconds(cfg.features)

    def timed(fn) -> float:
        best = float("inf")
        for _ in range(args.repeats):
            shutil.rmtree(features.feature_dir(cfg, args.dataset), ignore_errors=True)
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return best

    bare = timed(lambda: bare_decode(plan, seconds))
    ours = timed(lambda: features.extract(cfg, args.dataset, workers=0))
    ours2 = timed(lambda: features.extract(cfg, args.dataset, workers=2))

    dataset = ShardedClips(features.feature_dir(cfg, args.dataset))
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
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"extraction / bare decode throughput (same process count): {bare / ours:.2f} (target >= 0.7)")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
