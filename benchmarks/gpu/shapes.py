"""The shapes the GPU check runs at: ``config/paper.yaml`` on a GPU, a tiny model and clips under ``--smoke``.

Why here: every section builds its configuration from one place, so the smoke run exercises the
same code at other sizes and nothing else differs. Also the batch of random clips a timed step
reads, made on the device (at batch 512 the paper's clips are 2.5 GB; made on the host they
would take longer than the steps timed on them).
"""

from __future__ import annotations

from pathlib import Path

import torch

from cmgh import config
from cmgh.config import Config

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "config" / "paper.yaml"
BACKBONE = "ma"  # VATT-MA-Medium: one Transformer shared by the three modalities
# A model and clips small enough for a few CPU steps in seconds; the paper's keys otherwise.
SMOKE = [
    "model.width=64", "model.depth=2", "model.heads=4", "model.mlp_ratio=2", "model.video_patch=[2,8,8]", "model.audio_patch=200",
    "model.text_embed_dim=32", "model.va_dim=64", "model.vat_dim=32",
    "features.video.frames=8", "features.video.fps=4", "features.video.size=32", "features.video.short_side=48",
    "features.audio.sample_rate=8000", "features.text.vocab_size=512",
]
# The all_parameters meeting point, and a curriculum that acts from the first step (paper.yaml's waits 50k steps).
ALL_PARAMETERS = ["pretrain.harmonize.meeting_point=all_parameters"]
CURRICULUM = ["pretrain.curriculum.warmup_steps=0", "pretrain.curriculum.start_keep=0.8", "pretrain.curriculum.end_keep=0.8"]
# check name -> (variant of config/paper.yaml, overrides applied after it)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "baseline": ("baseline", []),
    "gr_gcl": ("gr_gcl", CURRICULUM),
    "all_parameters": ("gr", ALL_PARAMETERS),
    "gr_gcl_all": ("gr_gcl", [*ALL_PARAMETERS, *CURRICULUM]),
}


def base(smoke: bool, overrides: list[str] | None = None) -> Config:
    """``config/paper.yaml`` (with :data:`SMOKE` under ``--smoke``) plus ``overrides``."""
    return config.load(PAPER, overrides=[*(SMOKE if smoke else []), *(overrides or [])])


def resolved(smoke: bool, name: str, overrides: list[str] | None = None) -> Config:
    """The config of check variant ``name`` (:data:`VARIANTS`), resolved: its variant's keys, then its overrides."""
    variant, extra = VARIANTS[name]
    return config.with_overrides(config.for_variant(base(smoke, overrides), variant), extra)


def device_batch(cfg: Config, batch_size: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random clips at ``cfg``'s shapes, made on ``device``: the keys and ranges of ``benchmarks/model_demand.py``'s batch."""
    f = cfg.features
    gen = torch.Generator(device=device).manual_seed(seed)
    samples = round(int(f.audio.sample_rate) * int(f.video.frames) / float(f.video.fps))
    k, length = int(f.text.candidates), int(f.text.max_tokens)
    return {
        "video": torch.randint(0, 256, (batch_size, int(f.video.frames), int(f.video.size), int(f.video.size), 3), dtype=torch.uint8,
                               generator=gen, device=device),
        "audio": torch.rand(batch_size, samples, generator=gen, device=device) * 2 - 1,
        "text": torch.randint(2, int(f.text.vocab_size), (batch_size, k, length), generator=gen, device=device),
        "text_mask": torch.ones(batch_size, k, dtype=torch.bool, device=device),
        "has_text": torch.ones(batch_size, dtype=torch.bool, device=device),
    }


def describe(cfg: Config) -> str:
    m, v = cfg.model, cfg.features.video
    return (f"width {m.width}, depth {m.depth}, {m.heads} heads; {v.frames} frames @ {v.fps} fps, {v.size}^2; "
            f"{float(v.frames) / float(v.fps):g} s of {cfg.features.audio.sample_rate} Hz audio; DropToken {m.droptoken}")
