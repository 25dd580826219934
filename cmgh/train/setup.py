"""Set-up of one pre-training run: everything the loop steps, built from the config in a fixed order.

The order matters: seeding, then dataset, batch stream and model (whose initialization draws
from the seeded generator), so that the same config and seed give the same run, bit for bit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cmgh import config as config_mod
from cmgh import layout
from cmgh.config import Config
from cmgh.data.datasets import ShardedClips
from cmgh.data.features import feature_dir, vocab_path
from cmgh.data.text import Vocabulary
from cmgh.harmonize import Harmonizer
from cmgh.models import build_model
from cmgh.train import distributed
from cmgh.train.batches import BatchStream
from cmgh.train.schedule import build_scheduler


@dataclass(frozen=True)
class RunSpec:
    backbone: str
    variant: str
    seed: int
    out: Path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pretrain_dataset(cfg: Config) -> ShardedClips:
    """HowTo100M-style triplets (VATT also mixes AudioSet pairs at paper scale: rows without text)."""
    return ShardedClips(feature_dir(cfg, "howto100m"), modalities=("video", "audio", "text"))


def build_optimizer(model: torch.nn.Module, cfg: Config, device: torch.device) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases, norms, positional embeddings and aggregation tokens."""
    pcfg = cfg.pretrain
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "pos" in name or "agg" in name else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": float(pcfg.weight_decay)}, {"params": no_decay, "weight_decay": 0.0}],
        lr=float(pcfg.lr),
        betas=tuple(pcfg.betas),
        eps=float(pcfg.eps),
        fused=device.type == "cuda",
    )


def build_scheduler_for(optimizer: torch.optim.Optimizer, cfg: Config) -> torch.optim.lr_scheduler.LambdaLR:
    pcfg = cfg.pretrain
    return build_scheduler(optimizer, float(pcfg.lr), float(pcfg.min_lr), int(pcfg.warmup_steps), int(pcfg.steps))


@dataclass
class Run:
    """The live objects of one run (a resumed run loads its state into them, see :mod:`cmgh.train.state`)."""

    cfg: Config  # resolved for the variant
    spec: RunSpec
    dist: distributed.DistInfo
    device: torch.device
    dataset: ShardedClips
    stream: BatchStream
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    harmonizer: Harmonizer
    vocab_size: int
    gather: distributed.RowGather | None  # under torchrun the losses see the global batch's negatives

    @property
    def total(self) -> int:
        return int(self.cfg.pretrain.steps)


def build(cfg: Config, spec: RunSpec) -> Run:
    """Resolve the variant, join the process group (if any), write the config, build every part."""
    cfg = config_mod.for_variant(cfg, spec.variant)
    dist_info = distributed.init_from_env()
    device = distributed.device_for(dist_info)
    spec.out.mkdir(parents=True, exist_ok=True)
    pcfg = cfg.pretrain
    if dist_info.is_main:
        cfg.write(spec.out, layout.CONFIG)

    seed_everything(spec.seed)
    vocab = Vocabulary.load(vocab_path(cfg))
    dataset = pretrain_dataset(cfg)
    stream = BatchStream(dataset, int(pcfg.batch_size), spec.seed, dist_info.rank, dist_info.world_size)
    model = build_model(cfg, spec.backbone, vocab_size=len(vocab)).to(device)
    optimizer = build_optimizer(model, cfg, device)
    scheduler = build_scheduler_for(optimizer, cfg)
    harmonizer = Harmonizer.from_config(cfg.to_dict()["pretrain"])
    if pcfg.compile:
        # In place (nn.Module.compile): the trainer calls encode/heads, not forward, and the
        # state_dict keys stay those of the plain model, so checkpoints are interchangeable.
        model.backbone.compile()
        model.head.compile()
    gather = distributed.RowGather(dist_info, stream.global_batch // dist_info.world_size) if dist_info.enabled else None
    return Run(cfg, spec, dist_info, device, dataset, stream, model, optimizer, scheduler, harmonizer, len(vocab), gather)
