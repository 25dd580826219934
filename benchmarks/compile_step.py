"""What ``pretrain.compile`` buys on this machine: the trainer's step compiled vs eager, measured in the same run.

For each backbone (``ms``, ``ma``) and meeting point (the representation, and ``all_parameters``
where the recorded shared pathway stays eager: :mod:`cmgh.train.compile`), the variant ``gr_gcl``
(rule ``cmgh`` + the conflict-scored curriculum) runs :func:`cmgh.train.step.train_step`, the
function the pre-training loop calls, on one model and batch: eager, then compiled in place by
:func:`cmgh.train.compile.compile_model` (what ``pretrain.compile: true`` does). Printed per
case: the first compiled steps' time (compilation, with Inductor's on-disk cache as found), the
median and best step eager and compiled (timed in turn, so that a shared machine's load falls on
both; the best steps are the least disturbed), and their ratios; the ratios last.

Usage: .venv/bin/python benchmarks/compile_step.py [--width 256 --depth 4 --batch 32] [--steps 9] [--backend inductor]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from cmgh import config  # noqa: E402
from cmgh.harmonize import Harmonizer  # noqa: E402
from cmgh.models import build_model  # noqa: E402
from cmgh.train.compile import compile_model  # noqa: E402
from cmgh.train.setup import build_optimizer, build_scheduler_for  # noqa: E402
from cmgh.train.step import train_step  # noqa: E402

POINTS = {"representation": [], "all_parameters": ["pretrain.harmonize.meeting_point=all_parameters"]}
CURRICULUM_NOW = ["pretrain.curriculum.warmup_steps=0"]  # the curriculum acts from the first timed step


def make_batch(cfg: config.Config, batch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random clips at the config's shapes: uint8 video, waveform in [-1, 1], K full-length captions."""
    f = cfg.features
    gen = torch.Generator().manual_seed(seed)
    samples = round(f.audio.sample_rate * f.video.frames / f.video.fps)
    return {
        "video": torch.randint(0, 256, (batch_size, f.video.frames, f.video.size, f.video.size, 3), dtype=torch.uint8, generator=gen),
        "audio": torch.rand(batch_size, samples, generator=gen) * 2 - 1,
        "text": torch.randint(2, int(f.text.vocab_size), (batch_size, f.text.candidates, f.text.max_tokens), generator=gen),
        "text_mask": torch.ones(batch_size, f.text.candidates, dtype=torch.bool),
        "has_text": torch.ones(batch_size, dtype=torch.bool),
    }


class Trainer:
    """One fresh ``gr_gcl`` model with the trainer's optimizer, schedule and harmonizer; compiled or eager."""

    def __init__(self, cfg: config.Config, backbone: str, compiled: bool, backend: str) -> None:
        torch.manual_seed(0)
        self.model = build_model(cfg, backbone).train()
        self.optimizer = build_optimizer(self.model, cfg, torch.device("cpu"))
        self.scheduler = build_scheduler_for(self.optimizer, cfg)
        self.harmonizer = Harmonizer.from_config(cfg.to_dict()["pretrain"])
        if compiled:
            compile_model(self.model, self.harmonizer, backend)
        self.batch, self.cfg, self.k = make_batch(cfg, int(cfg.pretrain.batch_size)), cfg, 0

    def step(self) -> float:
        p = self.cfg.pretrain
        t0 = time.perf_counter()
        train_step(self.model, self.batch, self.optimizer, self.scheduler, self.harmonizer, step=self.k,
                   temperature=float(p.temperature), grad_clip=float(p.grad_clip))
        self.k += 1
        return time.perf_counter() - t0


def interleaved(eager: Trainer, compiled: Trainer, warmup: int, steps: int) -> tuple[float, list[float], list[float]]:
    """(seconds of the compiled model's ``warmup`` first steps, eager and compiled step times taken in turn):
    alternating the two keeps a shared machine's load changes out of their ratio."""
    first = sum(compiled.step() for _ in range(warmup))
    for _ in range(warmup):
        eager.step()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(steps):
        times[0].append(eager.step())
        times[1].append(compiled.step())
    return first, *times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=9, help="timed steps per case and mode (median and best reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps (the compiled ones compile there)")
    parser.add_argument("--backend", default="inductor", help="pretrain.compile_backend (default inductor)")
    parser.add_argument("--backbones", nargs="+", default=["ms", "ma"])
    args = parser.parse_args()

    base = config.with_overrides(config.load(), [f"model.width={args.width}", f"model.depth={args.depth}", "model.heads=4",
                                                 f"pretrain.batch_size={args.batch}", *CURRICULUM_NOW])
    print(f"cpu ({torch.get_num_threads()} threads), torch {torch.__version__}, backend {args.backend}; "
          f"width {args.width} depth {args.depth} batch {args.batch}, variant gr_gcl, median of {args.steps} steps")
    ratios = {}
    for backbone in args.backbones:
        for point, extra in POINTS.items():
            cfg = config.for_variant(config.with_overrides(base, extra), "gr_gcl")
            first, eager, compiled = interleaved(Trainer(cfg, backbone, False, args.backend), Trainer(cfg, backbone, True, args.backend),
                                                 args.warmup, args.steps)
            e, c = statistics.median(eager), statistics.median(compiled)
            ratios[f"{backbone} {point}"] = (c / e, min(compiled) / min(eager))
            print(f"  {backbone} {point:15s} eager {e * 1000:7.1f} ms/step, compiled {c * 1000:7.1f} ms/step "
                  f"(best {min(eager) * 1000:.1f} / {min(compiled) * 1000:.1f}; first {args.warmup} compiled steps {first:.1f} s): "
                  f"compiled / eager {c / e:.2f}x (best {min(compiled) / min(eager):.2f}x)")
    print("compiled / eager step time, median (best): " + ", ".join(f"{k} {m:.2f}x ({b:.2f}x)" for k, (m, b) in ratios.items()))


if __name__ == "__main__":
    main()
