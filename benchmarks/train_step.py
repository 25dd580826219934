"""Cost of a harmonized training step relative to a plain one, measured in the same run.

Every harmonized mode times :func:`cmgh.train.step.train_step`, the very function the
pre-training loop calls (forward, harmonized backward, clipping, AdamW and schedule step), with
the optimizer and schedule the trainer builds from the config. Modes on the same model and batch:
  plain       forward + ``total.backward()`` + the same clipping and optimizer/schedule step
              (no harmonization machinery at all)
  baseline    train_step, rule ``none``, no curriculum (variant ``baseline``)
  gr          train_step, rule ``cmgh``, no curriculum (variant ``gr``)
  gr_gcl      train_step, rule ``cmgh`` + conflict-scored curriculum (keep 0.8), representation
              meeting point (variant ``gr_gcl``)
  gr_gcl_par  the same with the ``parameters`` meeting point (cosine over the last video block)
  gr_all      rule ``cmgh`` at the ``all_parameters`` meeting point: the exact per-sample Gram
              over every shared parameter and the rule applied there (no curriculum)
  gr_gcl_all  the same with the conflict-scored curriculum (its weighted Gram is a second one)
  naive       per-sample parameter gradients of both losses over the whole video pathway with
              ``torch.func`` (vmap(grad)), PCGrad per sample, summed, then the same update: what
              a literal per-sample PCGrad would cost
Controls and the faithful configuration (train_step, default model only):
  norm_matched, random_partner   the mechanism-control rules in place of ``cmgh``
  gr_own      rule ``cmgh`` with triplet-own per-sample gradients (``per_sample: own``)
  oracle      the curriculum scored by the batch's ground truth (``granularity: loss``)
  quality     the curriculum scored by ground truth plus noise (AUROC 0.8)

Peak memory is the peak of live CPU-allocator bytes during one step, from PyTorch's profiler
memory timeline. A second, larger model (width 256, 4 layers, batch 32) repeats the ratios of
the trainer's modes at a more realistic size and gives the achieved FLOP/s of a plain step as a
fraction of this machine's fp32 matmul peak. A third shape is the paper's per layer: width 1024,
16 heads, 32 frames of 224^2 in 4x16x16 patches with DropToken 0.5 (785 video tokens), 48 kHz
audio, two layers per tower and batch 2, timing plain, ``gr`` and ``gr_all``, in fp32 and under bf16
autocast (``pretrain.precision=bf16``, the paper's precision; every mode, plain included, under the
same autocast: on a CPU with AMX or a GPU's tensor cores bf16 GEMMs run at 2-4x the fp32 rate).

The rivals (``--rivals``: the objective balancers ``alternate`` and ``famo``, PCGrad on the whole
batch at the representation and over every shared parameter, CAGrad over every shared parameter,
the NCR loss mixture and Co-teaching) print their own table: time and peak memory against a plain
step, and time on the large model; instance-wise UPGrad at the representation.

Usage: .venv/bin/python benchmarks/train_step.py [--repeats 5] [--width 64 --depth 2 --batch 64] [--rivals]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call, grad, vmap
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cmgh import config, harmonize, losses  # noqa: E402
from cmgh.harmonize import Harmonizer, forward_losses, truth  # noqa: E402
from cmgh.models import build_model  # noqa: E402
from cmgh.train.setup import build_optimizer, build_scheduler_for  # noqa: E402
from cmgh.train.precision import autocast  # noqa: E402
from cmgh.train.step import train_step  # noqa: E402

VIDEO_PATHWAY = ("video_tok", "backbone.nets.video", "backbone.agg.video")
CONTROL_MODES = ("norm_matched", "random_partner", "gr_own", "oracle", "quality")
MODES = ("plain", "baseline", "gr", "gr_gcl", "gr_gcl_par", "gr_all", "gr_gcl_all", "naive", *CONTROL_MODES)
TRAINER_MODES = ("baseline", "gr", "gr_gcl", "gr_gcl_par", "gr_all", "gr_gcl_all")  # through train_step, every model size
ALL_PARAMETERS = ["pretrain.harmonize.meeting_point=all_parameters"]
# mode -> (variant, extra overrides); the curriculum keeps 0.8 from step 0 so that it acts at step 50.
VARIANTS = {
    "baseline": ("baseline", []),
    "gr": ("gr", []),
    "gr_gcl": ("gr_gcl", []),
    "gr_gcl_par": ("gr_gcl", ["pretrain.harmonize.meeting_point=parameters", "pretrain.harmonize.parameter_blocks=1"]),
    "gr_all": ("gr", ALL_PARAMETERS),
    "gr_gcl_all": ("gr_gcl", ALL_PARAMETERS),
    "norm_matched": ("baseline", ["pretrain.harmonize.rule=norm_matched"]),
    "random_partner": ("baseline", ["pretrain.harmonize.rule=random_partner"]),
    "gr_own": ("gr", ["pretrain.harmonize.per_sample=own"]),
    "oracle": ("gcl", ["pretrain.curriculum.scorer=oracle", "pretrain.curriculum.granularity=loss"]),
    "quality": ("gcl", ["pretrain.curriculum.scorer=quality"]),
    # the rivals (--rivals): objective balancers, batch-level surgery, loss-based selection
    "alternate": ("baseline", ["pretrain.balance.method=alternate"]),
    "famo": ("baseline", ["pretrain.balance.method=famo"]),
    "pcgrad_batch_rep": ("baseline", ["pretrain.harmonize.rule=pcgrad", "pretrain.harmonize.granularity=batch"]),
    "pcgrad_batch": ("baseline", ["pretrain.harmonize.rule=pcgrad", "pretrain.harmonize.granularity=batch", *ALL_PARAMETERS]),
    "cagrad_batch": ("baseline", ["pretrain.harmonize.rule=cagrad", "pretrain.harmonize.granularity=batch", *ALL_PARAMETERS]),
    "upgrad_instance": ("baseline", ["pretrain.harmonize.rule=upgrad", "pretrain.harmonize.granularity=instance"]),
    "ncr_mixture": ("baseline", ["pretrain.curriculum.rule=threshold", "pretrain.curriculum.scorer=mixture",
                                 "pretrain.curriculum.granularity=loss", "pretrain.curriculum.threshold=0.5"]),
    "coteaching": ("baseline", ["pretrain.curriculum.rule=coteaching", "pretrain.curriculum.scorer=loss",
                                "pretrain.curriculum.granularity=loss"]),
}
RIVAL_MODES = ("alternate", "famo", "pcgrad_batch_rep", "pcgrad_batch", "cagrad_batch", "upgrad_instance", "ncr_mixture", "coteaching")
# The paper's shapes per layer (config/paper.yaml), two layers deep, so that a CPU step takes seconds.
PAPER_DEPTH = 2
PAPER_LIKE = ["model.heads=16", "model.video_patch=[4,16,16]", "model.audio_patch=128", "model.droptoken=0.5",
              "features.video.frames=32", "features.video.fps=10", "features.video.size=224", "features.video.short_side=256",
              "features.audio.sample_rate=48000"]
CURRICULUM = ["pretrain.curriculum.warmup_steps=0", "pretrain.curriculum.start_keep=0.8", "pretrain.curriculum.end_keep=0.8"]
STEP = 50  # the step index the harmonizer sees (curriculum active)


class Bench:
    """One model, one batch, the trainer's optimizer and schedule, and a harmonizer per mode."""

    def __init__(self, width: int, depth: int, batch_size: int, seed: int = 0, shape: tuple[str, ...] = ()) -> None:
        sizes = [f"model.width={width}", f"model.depth={depth}", f"pretrain.batch_size={batch_size}", "pretrain.steps=1000"]
        self.cfg = cfg = config.load(overrides=[*sizes, *shape, *CURRICULUM])
        torch.manual_seed(seed)
        self.model = build_model(cfg, "ms", vocab_size=4096)
        self.device = next(self.model.parameters()).device
        self.optimizer = build_optimizer(self.model, cfg, self.device)
        self.scheduler = build_scheduler_for(self.optimizer, cfg)
        self.harmonizers = {
            mode: Harmonizer.from_config(config.for_variant(config.with_overrides(cfg, extra), variant).to_dict()["pretrain"])
            for mode, (variant, extra) in VARIANTS.items()
        }
        f = cfg.features
        samples = round(f.audio.sample_rate * f.video.frames / f.video.fps)
        gen = torch.Generator().manual_seed(seed)
        text = torch.randint(2, 4096, (batch_size, f.text.candidates, f.text.max_tokens), generator=gen)
        text[..., 10:] = 0
        self.batch = {
            "video": torch.randint(0, 255, (batch_size, f.video.frames, f.video.size, f.video.size, 3), dtype=torch.uint8, generator=gen),
            "audio": torch.rand(batch_size, samples, generator=gen) * 2 - 1,
            "text": text,
            "text_mask": torch.ones(batch_size, f.text.candidates, dtype=torch.bool),
            "has_text": torch.ones(batch_size, dtype=torch.bool),
            # the generator's ground truth, read only by the oracle and quality modes
            truth.MISALIGNED_AUDIO: torch.zeros(batch_size, dtype=torch.bool),
            truth.MISALIGNED_TEXT: torch.rand(batch_size, generator=gen) < 0.3,
        }

    def step(self, mode: str) -> None:
        pcfg = self.cfg.pretrain
        if mode in (*TRAINER_MODES, *CONTROL_MODES, *RIVAL_MODES):
            train_step(self.model, self.batch, self.optimizer, self.scheduler, self.harmonizers[mode], step=STEP,
                       temperature=float(pcfg.temperature), precision=str(pcfg.precision), grad_clip=float(pcfg.grad_clip))
            return
        self.optimizer.zero_grad(set_to_none=True)
        if mode == "plain":
            with autocast(self.device, str(pcfg.precision)):
                plain_backward(self.model, self.batch, float(pcfg.temperature))
        elif mode == "naive":
            naive_backward(self.model, self.batch, float(pcfg.temperature))
        else:
            raise ValueError(mode)
        # The update train_step makes after its backward, so that every mode's step is a whole step.
        if float(pcfg.grad_clip) > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(pcfg.grad_clip))
        self.optimizer.step()
        self.scheduler.step()


def plain_backward(model: torch.nn.Module, batch: dict[str, torch.Tensor], temperature: float) -> None:
    """Forward and ``total.backward()`` (the caller's autocast covers the forward; the backward leaves it, as train_step's does)."""
    out = model(batch)
    valid = losses.text_valid(batch["text_mask"], batch["has_text"])
    l_va = losses.nce(out["z_va_video"], out["z_va_audio"], temperature)
    l_vt = losses.mil_nce(out["z_vat_video"], out["z_vat_text"], batch["text_mask"], temperature, valid=valid)
    total = losses.objective(l_va, l_vt, valid, 1.0).total
    with torch.autocast(next(model.parameters()).device.type, enabled=False):
        total.backward()


def naive_backward(model: torch.nn.Module, batch: dict[str, torch.Tensor], temperature: float) -> None:
    """Per-sample gradients over every video-pathway parameter, PCGrad per sample, summed."""
    out = forward_losses(model, batch, temperature, hidden_blocks=0)
    # Heads, audio and text towers: plain gradients of the total.
    c_va, c_vt = harmonize.objective_cotangents(out.valid_vt, 1.0, None, None, out.l_va.shape[0])
    g_va, g_vt = harmonize.per_sample_gradients(out.l_va, out.l_vt, out.meet, c_va, c_vt)
    (out.l_va * c_va + out.l_vt * c_vt).sum().backward(inputs=[p for n, p in model.named_parameters() if not n.startswith(VIDEO_PATHWAY)])
    names = [n for n, _ in model.named_parameters() if n.startswith(VIDEO_PATHWAY)]
    params = {n: p.detach() for n, p in model.named_parameters() if n in names}

    def contracted(theta: dict[str, torch.Tensor], video: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return (_video_rep(model, theta, video) * g).sum()

    attention = [m for m in model.modules() if hasattr(m, "fused")]
    for m in attention:
        m.fused = False  # explicit attention: vmap has no batching rule for the fused CPU kernel (a slow loop)
    try:
        per_va = vmap(grad(contracted), in_dims=(None, 0, 0))(params, batch["video"], g_va.detach())
        per_vt = vmap(grad(contracted), in_dims=(None, 0, 0))(params, batch["video"], g_vt.detach())
    finally:
        for m in attention:
            m.fused = True
    flat_va = torch.cat([per_va[n].flatten(1) for n in names], 1)
    flat_vt = torch.cat([per_vt[n].flatten(1) for n in names], 1)
    combined = harmonize.get("pcgrad")(flat_va, flat_vt).sum(0)
    offset = 0
    for n, p in model.named_parameters():
        if n in params:
            size = p.numel()
            p.grad = combined[offset : offset + size].view_as(p).clone()
            offset += size


def _video_rep(model: torch.nn.Module, theta: dict[str, torch.Tensor], video: torch.Tensor) -> torch.Tensor:
    class VideoOnly(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.video_tok, self.backbone = m.video_tok, m.backbone

        def forward(self, v: torch.Tensor) -> torch.Tensor:
            return self.backbone("video", self.video_tok(v), None, 0)[0]

    wrapper = VideoOnly(model)
    return functional_call(wrapper, theta, (video.unsqueeze(0),), strict=False).squeeze(0)


def time_modes(
    modes: tuple[str, ...], width: int, depth: int, batch_size: int, repeats: int, shape: tuple[str, ...] = ()
) -> dict[str, float]:
    bench = Bench(width, depth, batch_size, shape=shape)
    best = {m: float("inf") for m in modes}
    for m in modes:  # warm-up (also allocates the optimizer state)
        bench.step(m)
    for r in range(repeats):
        # Interleaved so that machine noise hits every mode alike, in a rotating order so that no
        # mode always follows the allocation-heavy naive step.
        for m in modes[r % len(modes) :] + modes[: r % len(modes)]:
            t0 = time.perf_counter()
            bench.step(m)
            best[m] = min(best[m], time.perf_counter() - t0)
    return best


def peak_step_mb(mode: str, width: int, depth: int, batch_size: int, shape: tuple[str, ...] = ()) -> float:
    """Peak of the CPU allocator's live bytes during one step (PyTorch profiler memory timeline)."""
    bench = Bench(width, depth, batch_size, shape=shape)
    bench.step(mode)  # warm-up outside the profile (allocates the optimizer state)
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True, record_shapes=True, with_stack=True) as prof:
        bench.step(mode)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "timeline.json"
        prof.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())
    return float(np.asarray(sizes).sum(axis=1).max()) / 1e6


def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def step_flops(width: int, depth: int, batch_size: int) -> float:
    """FLOPs of one plain step (matmuls and attention of forward and backward; the update is pointwise)."""
    bench = Bench(width, depth, batch_size)
    with FlopCounterMode(display=False) as counter:
        bench.step("plain")
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--skip-paper-like", action="store_true", help="leave out the paper-shaped layer (about two minutes)")
    parser.add_argument("--rivals", action="store_true", help="only the rivals' step time and peak memory against a plain step")
    args = parser.parse_args()
    if args.rivals:
        rivals(args)
        return
    times = time_modes(MODES, args.width, args.depth, args.batch, args.repeats)
    rss = {m: peak_step_mb(m, args.width, args.depth, args.batch) for m in ("plain", "baseline", "gr_gcl", "gr_gcl_par", "gr_all", "naive")}
    big_w, big_d, big_b = 256, 4, 32
    big = time_modes(("plain", *TRAINER_MODES), big_w, big_d, big_b, max(2, args.repeats // 2))
    big_rss = {m: peak_step_mb(m, big_w, big_d, big_b) for m in ("plain", "gr_all")}
    flops = step_flops(big_w, big_d, big_b)
    peak = matmul_peak_flops()
    paper: dict[str, float] = {}
    paper_bf16: dict[str, float] = {}
    paper_rss: dict[str, float] = {}
    if not args.skip_paper_like:
        shape = tuple(PAPER_LIKE)
        paper = time_modes(("plain", "gr", "gr_all"), 1024, PAPER_DEPTH, 2, 2, shape)
        paper_bf16 = time_modes(("plain", "gr", "gr_all"), 1024, PAPER_DEPTH, 2, 3, (*shape, "pretrain.precision=bf16"))
        paper_rss = {m: peak_step_mb(m, 1024, PAPER_DEPTH, 2, shape) for m in ("plain", "gr_all")}

    print(f"threads: {torch.get_num_threads()}, default model width {args.width} depth {args.depth}, batch {args.batch}")
    for m in MODES:
        print(f"  {m:<11} {times[m] * 1000:8.1f} ms/step  {args.batch / times[m]:7.0f} samples/s")
    for m, mb in rss.items():
        print(f"  peak step memory {m:<11} {mb:7.1f} MB")
    print(f"large model (width {big_w}, depth {big_d}, batch {big_b}):")
    for m in big:
        print(f"  {m:<11} {big[m] * 1000:8.1f} ms/step  {big[m] / big['plain']:.2f}x plain")
    print(f"  peak step memory gr_all / plain: {big_rss['gr_all'] / big_rss['plain']:.2f}x")
    print(f"  {flops / big['plain'] / 1e9:.1f} GFLOP/s of {peak / 1e9:.1f} GFLOP/s fp32 matmul peak")
    if paper:
        print(f"paper-like layers (width 1024, 16 heads, 785 video tokens after DropToken, 48 kHz audio, depth {PAPER_DEPTH}, batch 2):")
        for m in paper:
            print(f"  {m:<11} {paper[m] * 1000:8.1f} ms/step  {paper[m] / paper['plain']:.2f}x plain   "
                  f"bf16 autocast {paper_bf16[m] * 1000:8.1f} ms/step  {paper_bf16[m] / paper_bf16['plain']:.2f}x plain")
        print(f"  peak step memory gr_all / plain: {paper_rss['gr_all'] / paper_rss['plain']:.2f}x")
    print(f"gr / baseline step time: {times['gr'] / times['baseline']:.2f}x (rule cmgh vs none, no curriculum)")
    print("controls / baseline step time: " + ", ".join(f"{m} {times[m] / times['baseline']:.2f}x" for m in CONTROL_MODES))
    print(f"parameters meeting point / plain: {times['gr_gcl_par'] / times['plain']:.2f}x  (large model: {big['gr_gcl_par'] / big['plain']:.2f}x)")
    print(f"naive per-sample PCGrad / plain: {times['naive'] / times['plain']:.2f}x  (gr_gcl saves {times['naive'] / times['gr_gcl']:.1f}x)")
    print(f"peak memory gr_gcl / plain: {rss['gr_gcl'] / max(rss['plain'], 1e-9):.2f}x (target <= 1.10x)")
    print(f"achieved FLOP/s / fp32 matmul peak: {flops / big['plain'] / peak:.0%} (aim >= 40%)")
    print(f"large model gr_gcl / baseline: {big['gr_gcl'] / big['baseline']:.2f}x, gr_gcl / plain: {big['gr_gcl'] / big['plain']:.2f}x")
    print(f"gr_gcl / baseline step time: {times['gr_gcl'] / times['baseline']:.2f}x, gr_gcl / plain: {times['gr_gcl'] / times['plain']:.2f}x (target <= 1.10x)")
    paper_note = (f", paper-like layers {paper['gr_all'] / paper['plain']:.2f}x (bf16 autocast {paper_bf16['gr_all'] / paper_bf16['plain']:.2f}x, "
                  f"memory {paper_rss['gr_all'] / paper_rss['plain']:.2f}x)") if paper else ""
    print(f"all_parameters (gr_all) / plain: {times['gr_all'] / times['plain']:.2f}x, large model {big['gr_all'] / big['plain']:.2f}x{paper_note}; "
          f"brute force (naive) {times['naive'] / times['plain']:.2f}x; peak memory {rss['gr_all'] / rss['plain']:.2f}x "
          f"(brute force {rss['naive'] / rss['plain']:.2f}x) (target <= 1.5x time, <= 1.3x memory)")


def rivals(args: argparse.Namespace) -> None:
    """The rivals' cost: step time and peak step memory against a plain step, on the default and the large model."""
    modes = ("plain", "baseline", *RIVAL_MODES)
    times = time_modes(modes, args.width, args.depth, args.batch, args.repeats)
    rss = {m: peak_step_mb(m, args.width, args.depth, args.batch) for m in modes}
    big_w, big_d, big_b = 256, 4, 32
    big = time_modes(modes, big_w, big_d, big_b, max(2, args.repeats // 2))
    print(f"threads: {torch.get_num_threads()}; default model width {args.width} depth {args.depth} batch {args.batch}; "
          f"large model width {big_w} depth {big_d} batch {big_b}")
    print(f"  {'mode':<17} {'ms/step':>8} {'time x plain':>13} {'memory x plain':>15} {'large: time x plain':>20}")
    for m in modes:
        print(f"  {m:<17} {times[m] * 1000:8.1f} {times[m] / times['plain']:12.2f}x {rss[m] / rss['plain']:14.2f}x "
              f"{big[m] / big['plain']:19.2f}x")
    print("rivals step time / plain (memory): " + ", ".join(
        f"{m} {times[m] / times['plain']:.2f}x ({rss[m] / rss['plain']:.2f}x)" for m in RIVAL_MODES))


if __name__ == "__main__":
    main()
