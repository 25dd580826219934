"""Model demand at paper shapes: FLOPs per sample of VATT-MA-Medium, step throughput, and loader supply / demand.

Why: the streaming loader (issue 11) is sized by what the model consumes. A GPU training step of
VATT-MA-Medium at ``config/paper.yaml`` shapes eats some number of clips per second; the loader
delivers clips/s per core x cores per GPU. The figure printed last is that supply divided by the
demand: >= 1 means the loader keeps the GPU busy.

* FLOPs per training sample at paper shapes (width 1024, depth 12, 16 heads; 32 frames of 224^2
  in 4x16x16 patches, 3.2 s of 48 kHz waveform in 128-sample patches, 5 captions of 16 tokens,
  DropToken 0.5): analytic (:func:`cmgh.models.flops.train_flops`) and measured with
  ``FlopCounterMode`` on one real :func:`cmgh.train.step.train_step` (forward, harmonized
  backward, AdamW, schedule) of the project's own model, and their ratio.
* Throughput of that same ``train_step`` (the trainer's optimizer, schedule and harmonizer, the
  config's precision: bf16 autocast on CUDA), warm-up steps excluded, each timed step between
  ``torch.cuda.synchronize`` calls; the median step gives samples/s (best and mean shown too:
  the CPU here is shared). On CUDA at paper shapes with batch ``--batch`` (default 32), halved
  on out-of-memory until it fits, and also compiled with ``--compile`` (the regions
  ``pretrain.compile`` compiles: tokenizers and Transformers); on CPU at a reduced shape (width 256, depth 4, 16 frames of
  112^2) so that the run takes a minute or two on 2 cores. Achieved FLOP/s is the counted
  FLOPs of a step over its median time, also as a fraction of a dense matmul's FLOP/s in the
  step's precision on the same device.
* Demand: the measured samples/s on CUDA; without a GPU, the issue's estimate for a current
  datacenter GPU, 40 % of 1 PFLOP/s bf16 over the measured FLOPs per sample (labelled as such).

The batch stays on the device: no host-to-device copy is timed (~5 MB per clip, a few GB/s
at these rates, within PCIe bandwidth but not free).

Usage: .venv/bin/python benchmarks/model_demand.py [--device cuda] [--batch 32] [--compile]
       [--loader-clips-per-s-per-core 50] [--cores 16]
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
from cmgh.config import Config  # noqa: E402
from cmgh.harmonize import Harmonizer  # noqa: E402
from cmgh.models import build_model  # noqa: E402
from cmgh.models.flops import flop_counter, train_flops  # noqa: E402
from cmgh.train.compile import compile_model  # noqa: E402
from cmgh.train.precision import use_bf16  # noqa: E402
from cmgh.train.setup import build_optimizer, build_scheduler_for  # noqa: E402
from cmgh.train.step import train_step  # noqa: E402

BACKBONE = "ma"  # VATT-MA-Medium: one Transformer shared by the three modalities
# CPU timing shape: the paper's config with a smaller model and shorter, smaller clips.
REDUCED = ["model.width=256", "model.depth=4", "model.heads=4", "features.video.frames=16", "features.video.size=112"]


class Bench:
    """The project's model, optimizer, schedule and harmonizer at one shape, and one batch on the device."""

    def __init__(self, cfg: Config, variant: str, batch_size: int, device: torch.device, seed: int = 0) -> None:
        self.cfg = cfg = config.for_variant(config.with_overrides(cfg, [f"pretrain.batch_size={batch_size}"]), variant)
        torch.manual_seed(seed)
        self.model = build_model(cfg, BACKBONE).to(device).train()
        self.device = device
        self.optimizer = build_optimizer(self.model, cfg, device)
        self.scheduler = build_scheduler_for(self.optimizer, cfg)
        self.harmonizer = Harmonizer.from_config(cfg.to_dict()["pretrain"])
        self.batch = make_batch(cfg, batch_size, device, seed)
        self.batch_size = batch_size
        self.steps = 0

    def step(self) -> None:
        p = self.cfg.pretrain
        train_step(self.model, self.batch, self.optimizer, self.scheduler, self.harmonizer, step=self.steps,
                   temperature=float(p.temperature), precision=str(p.precision), grad_clip=float(p.grad_clip))
        self.steps += 1

    def compile(self) -> None:
        """In place, as the trainer does under ``pretrain.compile`` (:func:`cmgh.train.compile.compile_model`)."""
        compile_model(self.model, self.harmonizer, str(self.cfg.pretrain.compile_backend), self.device)


def make_batch(cfg: Config, batch_size: int, device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    """Random clips at the config's shapes: uint8 video, waveform in [-1, 1], K full-length captions."""
    f = cfg.features
    gen = torch.Generator().manual_seed(seed)
    samples = round(f.audio.sample_rate * f.video.frames / f.video.fps)
    batch = {
        "video": torch.randint(0, 256, (batch_size, f.video.frames, f.video.size, f.video.size, 3), dtype=torch.uint8, generator=gen),
        "audio": torch.rand(batch_size, samples, generator=gen) * 2 - 1,
        "text": torch.randint(2, int(f.text.vocab_size), (batch_size, f.text.candidates, f.text.max_tokens), generator=gen),
        "text_mask": torch.ones(batch_size, f.text.candidates, dtype=torch.bool),
        "has_text": torch.ones(batch_size, dtype=torch.bool),
    }
    return {k: v.to(device) for k, v in batch.items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_flops(bench: Bench) -> float:
    """FLOPs of one real ``train_step``, counted (not timed)."""
    with flop_counter() as counter:
        bench.step()
    return float(counter.get_total_flops())


def step_seconds(bench: Bench, warmup: int, steps: int) -> list[float]:
    """Wall time of each timed step, synchronized (the step syncs anyway: it reads the loss on the host)."""
    for _ in range(warmup):
        bench.step()
    times = []
    for _ in range(steps):
        sync(bench.device)
        t0 = time.perf_counter()
        bench.step()
        sync(bench.device)
        times.append(time.perf_counter() - t0)
    return times


def fitting_bench(cfg: Config, variant: str, batch_size: int, device: torch.device) -> Bench:
    """A bench whose step runs at ``batch_size``, halved on CUDA out-of-memory until it fits."""
    while True:
        bench: Bench | None = None
        try:
            bench = Bench(cfg, variant, batch_size, device)
            bench.step()  # allocates the optimizer state and the activations
            return bench
        except torch.cuda.OutOfMemoryError:
            if batch_size == 1:
                raise
        del bench
        torch.cuda.empty_cache()
        print(f"batch {batch_size} does not fit on {device}, trying {batch_size // 2}")
        batch_size //= 2


def matmul_peak(device: torch.device, bf16: bool, n: int, repeats: int = 5) -> float:
    """FLOP/s of the best of a few ``n x n`` matmuls in the step's precision: the device's dense reference."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def describe(cfg: Config) -> str:
    m, v = cfg.model, cfg.features.video
    return (f"width {m.width} depth {m.depth} heads {m.heads}, {v.frames} frames @ {v.fps} fps {v.size}^2, "
            f"audio {v.frames / v.fps:g} s @ {cfg.features.audio.sample_rate} Hz, droptoken {m.droptoken}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "config" / "paper.yaml", help="paper shapes (default config/paper.yaml)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    parser.add_argument("--batch", type=int, default=None, help="timed batch (default 32 on CUDA, halved until it fits; 16 on CPU)")
    parser.add_argument("--flops-batch", type=int, default=2, help="batch of the counted paper-shape step on CPU")
    parser.add_argument("--shape", choices=("auto", "paper", "reduced"), default="auto", help="timed shape (auto: paper on CUDA, reduced on CPU)")
    parser.add_argument("--variant", default="baseline", help="pretraining variant whose step is run (default baseline)")
    parser.add_argument("--compile", action="store_true", help="also time the step with torch.compile (as pretrain.compile: tokenizers and Transformers)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps before timing (default 3 on CUDA, 1 on CPU; +3 compiled)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20 on CUDA, 4 on CPU)")
    parser.add_argument("--loader-clips-per-s-per-core", type=float, default=50.0, help="loader supply per core (target 50; benchmarks/stream.py measures it)")
    parser.add_argument("--cores", type=int, default=16, help="loader cores per GPU")
    parser.add_argument("--estimate-peak", type=float, default=1e15, help="bf16 FLOP/s of the GPU the CPU-only estimate assumes")
    parser.add_argument("--estimate-utilization", type=float, default=0.4, help="fraction of that peak the estimate assumes")
    args = parser.parse_args()

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    paper = config.load(args.config)
    timed_cfg = paper if args.shape == "paper" or (args.shape == "auto" and cuda) else config.with_overrides(paper, REDUCED)
    at_paper = timed_cfg is paper
    batch = args.batch or (32 if cuda else 16)
    steps = args.steps or (20 if cuda else 4)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    bf16 = use_bf16(device, str(paper.pretrain.precision))
    text = paper.features.text
    k, length = int(text.candidates), int(text.max_tokens)
    print(f"device: {torch.cuda.get_device_name(device) if cuda else 'cpu'} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
          f"precision {'bf16 autocast' if bf16 else 'fp32'}, variant {args.variant}")
    print(f"paper shape: VATT-MA-Medium, {describe(paper)}")

    # Timed bench first on CUDA: at paper shape it also gives the counted FLOPs (no second model in memory).
    timed = fitting_bench(timed_cfg, args.variant, batch, device) if cuda else None
    if at_paper and timed is not None:
        counted, flops_batch = timed, timed.batch_size
    else:
        counted, flops_batch = Bench(paper, args.variant, args.flops_batch, device), args.flops_batch
    t0 = time.perf_counter()
    measured = step_flops(counted) / flops_batch
    count_s = time.perf_counter() - t0
    with torch.device("meta"):  # shapes only: the analytic count needs no weights
        meta_model = build_model(paper, BACKBONE)
    analytic = train_flops(meta_model, flops_batch, k, length)
    recompute = train_flops(meta_model, flops_batch, k, length, attention_recompute=True)
    seqs = ", ".join(f"{m} {c} x {n}" for m, (c, n) in analytic.sequences.items())
    print(f"  sequences per sample after droptoken (incl. [AGG]): {seqs}")
    print(f"  parameters: {sum(p.numel() for p in meta_model.parameters()) / 1e6:.1f} M")
    print("  analytic FLOPs/sample, forward+backward (blocks 24nd^2+4n^2d x3, tokenizers, heads, losses): "
          f"{analytic.total / 1e12:.4f} TFLOP ({', '.join(f'{p} {v / 1e12:.4f}' for p, v in analytic.parts.items())})")
    print(f"  analytic with the fused attention kernels' score recompute in backward: {recompute.total / 1e12:.4f} TFLOP")
    print(f"  measured FLOPs/sample (FlopCounterMode, one train_step at batch {flops_batch} on {device.type}, {count_s:.0f} s): "
          f"{measured / 1e12:.4f} TFLOP")
    print(f"  measured / analytic: {measured / analytic.total:.4f} (measured / analytic with recompute: {measured / recompute.total:.4f})")
    if counted is timed:
        step_fl = measured * flops_batch
    else:
        del counted
        if timed is None:
            timed = Bench(timed_cfg, args.variant, batch, device)
        step_fl = step_flops(timed)
    if not at_paper:
        small = train_flops(timed.model, timed.batch_size, k, length)
        print(f"timed reduced shape: {describe(timed_cfg)}")
        print(f"  FLOPs/sample at this shape: measured {step_fl / timed.batch_size / 1e9:.3f} GFLOP, analytic {small.total / 1e9:.3f} GFLOP, "
              f"ratio {step_fl / timed.batch_size / small.total:.4f}")

    peak = matmul_peak(device, bf16, 8192 if cuda else 2048)
    rates: dict[str, float] = {}
    modes = ["eager", "compiled"] if args.compile else ["eager"]
    for mode in modes:
        if mode == "compiled":
            timed.compile()
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        times = step_seconds(timed, warmup + (3 if mode == "compiled" else 0), steps)
        sec = statistics.median(times)
        rates[mode] = timed.batch_size / sec
        mem = f", peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if cuda else ""
        print(f"  train_step {mode}: batch {timed.batch_size}, {sec * 1000:.1f} ms/step (median of {steps}; best {min(times) * 1000:.1f}, "
              f"mean {statistics.mean(times) * 1000:.1f}), "
              f"{rates[mode]:.1f} samples/s, "
              f"{step_fl / sec / 1e12:.3f} TFLOP/s = {step_fl / sec / peak:.0%} of a {'bf16' if bf16 else 'fp32'} matmul's "
              f"{peak / 1e12:.3f} TFLOP/s{mem}")
    if args.compile:
        print(f"  compiled / eager samples/s: {rates['compiled'] / rates['eager']:.2f}x")

    supply = args.loader_clips_per_s_per_core * args.cores
    print(f"loader supply: {args.loader_clips_per_s_per_core:g} clips/s per core x {args.cores} cores = {supply:g} clips/s")
    if cuda and at_paper:
        demand = max(rates.values())
        print(f"model demand: {demand:.1f} samples/s (measured, train_step at paper shape on {device}, {max(rates, key=rates.get)})")
    else:
        demand = args.estimate_utilization * args.estimate_peak / measured
        print(f"model demand: {demand:.1f} samples/s (ESTIMATE, not measured: {args.estimate_utilization:g} x {args.estimate_peak:.3g} FLOP/s bf16 "
              f"of a current datacenter GPU / {measured / 1e12:.3f} TFLOP per sample measured at paper shape)")
    print(f"loader supply / model demand: {supply / demand:.2f}")


if __name__ == "__main__":
    main()
