"""Cost of a harmonized training step relative to a plain one, measured in the same run.

Modes on the same model and batch:
  plain       forward + ``total.backward()`` (no harmonization machinery at all)
  baseline    the trainer's path with rule ``none`` and no curriculum
  gr_gcl      rule ``cmgh`` + conflict-scored curriculum at the representation meeting point
  gr_gcl_par  the same with the ``parameters`` meeting point (cosine over the last video block)
  naive       per-sample parameter gradients of both losses over the whole video pathway with
              ``torch.func`` (vmap(grad)), PCGrad per sample, summed: what a literal
              per-sample PCGrad would cost

Peak memory is the peak of live CPU-allocator bytes during one step, from PyTorch's profiler
memory timeline. A second, larger model (width 256, 4 layers)
gives the achieved FLOP/s of a plain step as a fraction of this machine's fp32 matmul peak.

Usage: .venv/bin/python benchmarks/train_step.py [--repeats 5]
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
from cmgh import config, harmonize  # noqa: E402
from cmgh.harmonize.curriculum import Curriculum  # noqa: E402
from cmgh.harmonize import Harmonizer, forward_losses  # noqa: E402
from cmgh.models import build_model  # noqa: E402

VIDEO_PATHWAY = ("video_tok", "backbone.nets.video", "backbone.agg.video")
MODES = ("plain", "baseline", "gr_gcl", "gr_gcl_par", "naive")


def make(width: int, depth: int, batch_size: int, seed: int = 0) -> tuple[torch.nn.Module, dict[str, torch.Tensor], config.Config]:
    cfg = config.load(overrides=[f"model.width={width}", f"model.depth={depth}", f"pretrain.batch_size={batch_size}"])
    torch.manual_seed(seed)
    model = build_model(cfg, "ms", vocab_size=4096)
    f = cfg.features
    samples = round(f.audio.sample_rate * f.video.frames / f.video.fps)
    gen = torch.Generator().manual_seed(seed)
    text = torch.randint(2, 4096, (batch_size, f.text.candidates, f.text.max_tokens), generator=gen)
    text[..., 10:] = 0
    batch = {
        "video": torch.randint(0, 255, (batch_size, f.video.frames, f.video.size, f.video.size, 3), dtype=torch.uint8, generator=gen),
        "audio": torch.rand(batch_size, samples, generator=gen) * 2 - 1,
        "text": text,
        "text_mask": torch.ones(batch_size, f.text.candidates, dtype=torch.bool),
        "has_text": torch.ones(batch_size, dtype=torch.bool),
    }
    return model, batch, cfg


def harmonizer_for(mode: str, steps: int = 100) -> Harmonizer:
    if mode == "baseline":
        return Harmonizer("none")
    curriculum = Curriculum("cmgh", "conflict", "triplet", "linear", warmup_steps=0, start_keep=0.8, end_keep=0.8, total_steps=steps)
    meeting = "parameters" if mode == "gr_gcl_par" else "representation"
    return Harmonizer("cmgh", meeting_point=meeting, parameter_blocks=1, curriculum=curriculum)


def naive_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], temperature: float) -> None:
    """Per-sample gradients over every video-pathway parameter, PCGrad per sample, summed."""
    out = forward_losses(model, batch, temperature, hidden_blocks=0)
    # Heads, audio and text towers: plain gradients of the total.
    total = harmonize.objective_cotangents(out.valid_vt, 1.0, None, None, out.l_va.shape[0])
    c_va, c_vt = total
    g_va, g_vt = harmonize.per_sample_gradients(out.l_va, out.l_vt, out.meet, c_va, c_vt)
    (out.l_va * c_va + out.l_vt * c_vt).sum().backward(inputs=[p for n, p in model.named_parameters() if not n.startswith(VIDEO_PATHWAY)])
    names = [n for n, _ in model.named_parameters() if n.startswith(VIDEO_PATHWAY)]
    params = {n: p.detach() for n, p in model.named_parameters() if n in names}

    def contracted(theta: dict[str, torch.Tensor], video: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return (_video_rep(model, theta, video) * g).sum()

    per_va = vmap(grad(contracted), in_dims=(None, 0, 0))(params, batch["video"], g_va.detach())
    per_vt = vmap(grad(contracted), in_dims=(None, 0, 0))(params, batch["video"], g_vt.detach())
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


def one_step(mode: str, model: torch.nn.Module, batch: dict[str, torch.Tensor], harmonizer: Harmonizer | None) -> None:
    model.zero_grad(set_to_none=True)
    if mode == "plain":
        out = model(batch)
        from cmgh import losses

        valid = losses.text_valid(batch["text_mask"], batch["has_text"])
        l_va = losses.nce(out["z_va_video"], out["z_va_audio"], 0.07)
        l_vt = losses.mil_nce(out["z_vat_video"], out["z_vat_text"], batch["text_mask"], 0.07, valid=valid)
        losses.objective(l_va, l_vt, valid, 1.0).total.backward()
    elif mode == "naive":
        naive_step(model, batch, 0.07)
    else:
        assert harmonizer is not None
        harmonize.harmonized_step(model, batch, harmonizer, 0.07, step=50)


def time_modes(modes: tuple[str, ...], width: int, depth: int, batch_size: int, repeats: int) -> dict[str, float]:
    model, batch, _ = make(width, depth, batch_size)
    harmonizers = {m: harmonizer_for(m) for m in modes if m not in ("plain", "naive")}
    best = {m: float("inf") for m in modes}
    for m in modes:  # warm-up
        one_step(m, model, batch, harmonizers.get(m))
    for _ in range(repeats):  # interleaved so that machine noise hits every mode alike
        for m in modes:
            t0 = time.perf_counter()
            one_step(m, model, batch, harmonizers.get(m))
            best[m] = min(best[m], time.perf_counter() - t0)
    return best


def peak_step_mb(mode: str, width: int, depth: int, batch_size: int) -> float:
    """Peak of the CPU allocator's live bytes during one step (PyTorch profiler memory timeline)."""
    model, batch, _ = make(width, depth, batch_size)
    harmonizer = harmonizer_for(mode) if mode not in ("plain", "naive") else None
    one_step(mode, model, batch, harmonizer)  # warm-up outside the profile
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True, record_shapes=True, with_stack=True) as prof:
        one_step(mode, model, batch, harmonizer)
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
    model, batch, _ = make(width, depth, batch_size)
    with FlopCounterMode(display=False) as counter:
        one_step("plain", model, batch, None)
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=2)
    args = parser.parse_args()
    times = time_modes(MODES, args.width, args.depth, args.batch, args.repeats)
    rss = {m: peak_step_mb(m, args.width, args.depth, args.batch) for m in ("plain", "baseline", "gr_gcl", "gr_gcl_par")}
    big_w, big_d, big_b = 256, 4, 32
    big = time_modes(("plain",), big_w, big_d, big_b, max(2, args.repeats // 2))["plain"]
    flops = step_flops(big_w, big_d, big_b)
    peak = matmul_peak_flops()

    print(f"threads: {torch.get_num_threads()}, default model width {args.width} depth {args.depth}, batch {args.batch}")
    for m in MODES:
        print(f"  {m:<11} {times[m] * 1000:8.1f} ms/step  {args.batch / times[m]:7.0f} samples/s")
    for m, mb in rss.items():
        print(f"  peak step memory {m:<11} {mb:7.1f} MB")
    print(f"large model (width {big_w}, depth {big_d}, batch {big_b}): {flops / big / 1e9:.1f} GFLOP/s of {peak / 1e9:.1f} GFLOP/s fp32 matmul peak")
    print(f"parameters meeting point / plain: {times['gr_gcl_par'] / times['plain']:.2f}x")
    print(f"naive per-sample PCGrad / plain: {times['naive'] / times['plain']:.2f}x  (gr_gcl saves {times['naive'] / times['gr_gcl']:.1f}x)")
    print(f"peak memory gr_gcl / plain: {rss['gr_gcl'] / max(rss['plain'], 1e-9):.2f}x (target <= 1.10x)")
    print(f"achieved FLOP/s / fp32 matmul peak: {flops / big / peak:.0%} (aim >= 40%)")
    print(f"gr_gcl / baseline step time: {times['gr_gcl'] / times['baseline']:.2f}x, gr_gcl / plain: {times['gr_gcl'] / times['plain']:.2f}x (target <= 1.10x)")


if __name__ == "__main__":
    main()
