"""Cost of MLflow tracking on pre-training step time: the same run with tracking on and off.

A small HowTo100M-like corpus is generated into a temporary directory, then the same config
(variant ``gr_gcl``, one seed) is trained ``--repeats`` times with a :class:`NullTracker` and
with an :class:`MlflowTracker` on a sqlite store in the same temporary directory, interleaved
(off, on, off, on, ...) so that machine noise hits both alike. Each timing covers ``pretrain``
from scratch plus ``tracker.close()`` (buffered metric writes, artifacts, end of run); opening
the tracker (experiment lookup, sqlite schema creation on first use) is reported separately,
it happens once per job.

Tracked runs sample system metrics as pre-training runs do (``tracking.system_metrics``, every
``--system-interval`` seconds, default the config's); ``--no-system-metrics`` turns that off.

The last line is 1 + (time spent inside tracker calls per step + CPU time of the system-metrics
thread per step) / (best untracked step time): the tracker's own cost, measured in the tracked runs
themselves, so that load from other processes on a shared machine does not swamp a few-percent
difference. The wall-clock ratio of the tracked and untracked runs is printed above it as a cross-check.

Usage: .venv/bin/python benchmarks/tracking.py [--steps 40] [--repeats 3] [--threads 1] [--system-interval S | --no-system-metrics]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cmgh import config  # noqa: E402
from cmgh.data.extract import decoded  # noqa: E402
from cmgh.data.synth.generate import synthesize  # noqa: E402
from cmgh.track import open_tracker  # noqa: E402
from cmgh.tracking import NullTracker  # noqa: E402
from cmgh.train.loop import RunSpec, pretrain  # noqa: E402

VARIANT = "gr_gcl"


class Timed:
    """Wraps a tracker and adds up the time spent inside its calls (the tracker's own cost)."""

    def __init__(self, inner: object) -> None:
        self.inner, self.seconds = inner, 0.0

    def __getattr__(self, name: str) -> object:
        method = getattr(self.inner, name)
        if not callable(method):
            return method

        def call(*args: object, **kwargs: object) -> object:
            t0 = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        return call


def world(root: Path, steps: int, batch: int, system: float | None) -> config.Config:
    cfg = config.load(
        overrides=[
            f"paths.data={root / 'data'}",
            f"paths.features={root / 'features'}",
            f"paths.results={root / 'results'}",
            "data.synth.howto100m.videos=24",
            "features.workers=0",
            f"pretrain.steps={steps}",
            f"pretrain.batch_size={batch}",
            "pretrain.warmup_steps=2",
            "pretrain.curriculum.warmup_steps=5",
            "pretrain.checkpoint_every=20",
            f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
            f"tracking.artifacts={root / 'mlruns'}",
            f"tracking.system_metrics={str(system is not None).lower()}",
            *([f"tracking.system_metrics_interval_seconds={system}"] if system is not None else []),
        ]
    )
    synthesize(cfg, datasets=["howto100m"], progress=False)
    decoded.build_vocab(cfg)
    decoded.extract(cfg, "howto100m")
    return cfg


def timed_run(cfg: config.Config, out: Path, tracked: bool, seed_key: int) -> tuple[float, float, float, float, int]:
    """(seconds to open the tracker, seconds of pretrain + close, seconds inside tracker calls,
    CPU seconds of the system-metrics thread, its samples)."""
    t0 = time.perf_counter()
    if tracked:  # a distinct run key per repeat: every tracked repeat is a fresh MLflow run
        tracker = open_tracker(config.for_variant(cfg, VARIANT), f"bench/{seed_key}", {"variant": VARIANT}, stage="pretrain", out=out)
    else:
        tracker = NullTracker()
    tracker = Timed(tracker)
    t1 = time.perf_counter()
    pretrain(cfg, RunSpec("ms", VARIANT, 0, out), resume=False, tracker=tracker)
    tracker.close()
    t2 = time.perf_counter()
    sampler = getattr(tracker.inner, "_system", None)
    if tracked:
        assert getattr(tracker, "active", True) is False and tracker.run_id, "tracking failed during the benchmark"
        assert (sampler is not None) == bool(cfg.tracking.system_metrics), "system metrics did not start"
    return t1 - t0, t2 - t1, tracker.seconds, sampler.cpu_seconds if sampler else 0.0, sampler.samples if sampler else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--system-interval", type=float, default=float(config.load().tracking.system_metrics_interval_seconds),
                        help="seconds between system-metric samples (default: the config's)")
    parser.add_argument("--no-system-metrics", action="store_true", help="track without system metrics")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the benchmark's own sqlite store, always
    with tempfile.TemporaryDirectory(prefix="cmgh-track-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        cfg = world(root, args.steps, args.batch, None if args.no_system_metrics else args.system_interval)
        print(f"corpus generated and extracted in {time.perf_counter() - t0:.1f} s")
        timed_run(cfg, root / "warmup", False, -1)  # warm-up: imports, allocator, page cache
        opens, inside, sampling, samples, times = [], [], [], [], {False: [], True: []}
        for rep in range(args.repeats):
            for tracked in (False, True) if rep % 2 == 0 else (True, False):
                opened, seconds, in_tracker, sampler_cpu, sampled = timed_run(cfg, root / f"run{rep}_{int(tracked)}", tracked, rep)
                times[tracked].append(seconds / args.steps)
                if tracked:
                    opens.append(opened)
                    inside.append(in_tracker / args.steps)
                    sampling.append(sampler_cpu / args.steps)
                    samples.append(sampled)
    off, on = times[False], times[True]
    print(f"threads {args.threads}, batch {args.batch}, {args.steps} steps x {args.repeats} repeats (interleaved)")
    print(f"  off: {statistics.median(off) * 1000:8.1f} ms/step median, {min(off) * 1000:8.1f} best")
    print(f"  on:  {statistics.median(on) * 1000:8.1f} ms/step median, {min(on) * 1000:8.1f} best")
    print(f"  opening the tracker: {statistics.median(opens):.2f} s median (first: {opens[0]:.2f} s, creates the sqlite schema)")
    added = statistics.median(inside) / min(off)
    system = statistics.median(sampling) / min(off)
    print(f"  inside tracker calls: {statistics.median(inside) * 1000:.2f} ms/step = {added:.1%} of the best untracked step")
    if args.no_system_metrics:
        print("  system metrics: off")
    else:
        print(f"  system metrics every {args.system_interval:g} s ({statistics.median(samples):.0f} samples per run): sampling thread "
              f"{statistics.median(sampling) * 1000:.2f} ms/step CPU = {system:.1%} of the best untracked step")
    added += system
    print(f"wall clock on/off: {statistics.median(on) / statistics.median(off):.2f}x median, {min(on) / min(off):.2f}x best "
          "(noisy on a shared machine: a cross-check)")
    print(f"tracking overhead{'' if args.no_system_metrics else ' with system metrics'}: {1 + added:.2f}x (target <= 1.05)")


if __name__ == "__main__":
    main()
