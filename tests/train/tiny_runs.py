"""Small pre-training runs on the tiny world and the model state they leave: shared by the training
loop's tests and those training on packed shards or YouTube-8M."""

from __future__ import annotations

from pathlib import Path

import torch

from cmgh import checkpoint as ckpt
from cmgh import config as config_mod

SMALL = ["pretrain.batch_size=8", "pretrain.steps=12", "pretrain.warmup_steps=2", "pretrain.checkpoint_every=4",
         "pretrain.score_every=5", "pretrain.curriculum.warmup_steps=3", "model.width=32", "model.heads=2", "model.depth=1"]


def small(cfg: config_mod.Config, *extra: str) -> config_mod.Config:
    return config_mod.with_overrides(cfg, [*SMALL, *extra])


def state_of(path: Path) -> dict[str, torch.Tensor]:
    return ckpt.load(path)["model"]


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
