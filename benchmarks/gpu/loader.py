"""The loader feeding the GPU: generated 256p packed shards streamed by the real training loop, 8 and 14 loader workers.

Generated sources (``benchmarks/stream.py``'s panning texture and moving shapes, a tone with noise,
a caption every 2 s) in the HowTo100M layout, encoded in parallel, packed by the real writer
(:func:`cmgh.data.extract.packed.pack`) at paper settings; then :func:`cmgh.train.loop.pretrain`
trains VATT-MA-Medium (variant ``baseline``: the cheapest step, so the hardest to feed) for N steps
per worker count. Its train log says, per step, the time from one step to the next (what the
loader delivered) and the step's own time (what the GPU could take); after the warm-up steps:

* delivered samples/s = batch / median step-to-step time; demand = batch / median step time;
* GPU idle share = 1 - (sum of step times) / (sum of step-to-step times): the time the device
  waited for the next batch (loader, host-to-device copy, logging).

A loader that cannot keep up is a finding, not a failure; the section fails only when training does.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmarks import stream
from benchmarks.gpu import shapes
from benchmarks.gpu.core import Context, Outcome, Table
from cmgh import config, layout
from cmgh.config import Config
from cmgh.data.datasets import caption_json, howto100m
from cmgh.data.extract import packed, shards
from cmgh.data.extract.decoded import build_vocab
from cmgh.data.io import encode, media
from cmgh.train.loop import RunSpec, pretrain

CAPTIONS = ("stir the sauce slowly", "put the pan on the stove", "cut the onion in rings", "pour the water into the pot")


def _encode(job: tuple[str, int, int, int, float, int]) -> None:
    path, height, width, fps, seconds, sample_rate = job
    seed = int(Path(path).stem.removeprefix("gen"))
    frames = stream.frames(int(seconds * fps), height, width, fps, seed)
    encode.write_mp4(path, frames, fps, stream.tone(seconds, sample_rate, seed % 7), sample_rate)


def corpus(cfg: Config, videos: int, seconds: float, workers: int) -> Path:
    """``videos`` generated sources of ``seconds`` at the packed short side in HowTo100M's layout under ``paths.data``."""
    root = cfg.path("data") / "howto100m"
    ids = [f"gen{i:04d}" for i in range(videos)]
    rows = [(vid, "Food and Entertaining", "Recipes", i + 1, 1000 + i) for i, vid in enumerate(ids)]
    howto100m.write_howto100m_videos(root / layout.HOWTO100M_VIDEOS, pd.DataFrame(rows, columns=list(howto100m.HOWTO_VIDEO_COLUMNS)))
    starts = np.arange(0.0, seconds, 2.0)
    tracks = {vid: {"start": starts.tolist(), "end": (starts + 2.0).tolist(), "text": [CAPTIONS[(i + j) % len(CAPTIONS)] for j in range(len(starts))]}
              for i, vid in enumerate(ids)}
    caption_json.write_howto100m_captions(root / layout.HOWTO100M_CAPTIONS, tracks)
    v = cfg.features.video
    height = int(v.short_side)
    width = media.scaled_size(1280, 720, height)[0]
    jobs = [(str(layout.video_file(root, vid)), height, width, int(v.fps), seconds, int(cfg.features.audio.sample_rate)) for vid in ids]
    for job in jobs:
        Path(job[0]).parent.mkdir(parents=True, exist_ok=True)
    one_thread = torch.set_num_threads if workers > 0 else None  # forked workers, one torch thread each (as the DataLoader's)
    list(shards.ordered_map(_encode, jobs, workers, initializer=one_thread, initargs=(1,)))
    return root


def step_log(folder: Path) -> pd.DataFrame:
    """The per-step log of a run folder: ``train_log.jsonl`` once finished, the partial log of a run stopped before its end."""
    path = folder / layout.TRAIN_LOG
    path = path if path.is_file() else folder / layout.PARTIAL_LOG
    return pd.read_json(path, lines=True)


def summarize(log: pd.DataFrame, batch: int, skip: int) -> dict[str, float]:
    """Delivered and demanded samples/s and the GPU's idle share over the steps after ``skip``."""
    steady = log.iloc[skip:]
    elapsed = batch / steady["samples_per_s"]  # step to step, the loader's wait included
    busy = steady["step_time_s"]
    delivered, demand = batch / statistics.median(elapsed), batch / statistics.median(busy)
    return {"delivered_samples_s": delivered, "demand_samples_s": demand, "delivered_over_demand": delivered / demand,
            "gpu_idle_share": float(1 - busy.sum() / elapsed.sum()), "steps": len(steady)}


def run(ctx: Context) -> Outcome:
    opts, out = ctx.options, Outcome()
    home = ctx.work / "loader"
    batch = 4 if ctx.smoke else int(opts.loader_batch)
    steps, skip = (4, 1) if ctx.smoke else (int(opts.loader_steps), 5)
    counts = (0, 2) if ctx.smoke else tuple(opts.loader_workers)
    videos, seconds = (2 * batch, 3.0) if ctx.smoke else (2 * batch, 8.0)
    cfg = shapes.base(ctx.smoke, [
        f"paths.data={home / 'data'}", f"paths.features={home / 'features'}", f"paths.results={home / 'results'}",
        "pretrain.corpora=[{dataset: howto100m, weight: 1.0}]", f"pretrain.batch_size={batch}", f"pretrain.steps={steps + 1000}",
        "pretrain.checkpoint_every=1000000", "pretrain.score_every=1000000", "tracking.enabled=false",
    ])
    cores = max(1, len(os.sched_getaffinity(0)))
    corpus(cfg, videos, seconds, 0 if ctx.smoke else cores)
    build_vocab(cfg)
    packed.pack(cfg, "howto100m", workers=0 if ctx.smoke else cores)
    index = pd.read_parquet(layout.packed_dir(cfg.path("features"), "howto100m") / layout.FEATURE_INDEX)
    out.figures.update(videos=len(index), seconds_per_video=seconds, batch=batch, steps=steps, warmup_steps=skip,
                       short_side=int(cfg.features.video.short_side), host_cores=cores)
    rows: list[list[Any]] = []
    for workers in counts:
        run_cfg = config.with_overrides(cfg, [f"pretrain.num_workers={workers}"])
        folder = home / "results" / f"workers{workers}"
        pretrain(run_cfg, RunSpec(shapes.BACKBONE, "baseline", 0, folder), resume=False, stop_after=steps)
        log = step_log(folder)
        out.check(len(log) == steps, f"{workers} workers: {len(log)} steps logged, {steps} run")
        s = summarize(log, batch, skip)
        out.figures[f"workers{workers}"] = s
        rows.append([workers, s["delivered_samples_s"], s["demand_samples_s"], s["delivered_over_demand"], s["gpu_idle_share"], s["steps"]])
        out.headline.append(f"loader with {workers} workers: {s['delivered_samples_s']:.1f} samples/s delivered vs {s['demand_samples_s']:.1f} "
                            f"demanded by the step ({s['delivered_over_demand']:.2f}x), GPU idle {s['gpu_idle_share']:.0%}")
    out.tables.append(Table(f"{len(index)} packed {cfg.features.video.short_side}p clips of {seconds:g} s, {shapes.describe(cfg)}, batch {batch}, "
                            f"{steps} steps of which {skip} warm-up; {cores} host cores",
                            ["loader workers", "delivered samples/s", "step demand samples/s", "delivered / demand", "GPU idle share", "steps"], rows))
    out.notes.append("delivered = batch / median step-to-step time (the loader's wait included); demand = batch / median step time")
    return out
