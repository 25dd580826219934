"""Shared fixtures: a small generated world (generated once per session) and config helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmgh import config as config_mod


def tiny_overrides(root: Path) -> list[str]:
    """Overrides that shrink the default config to test size and put every path under ``root``."""
    return [
        f"paths.data={root / 'data'}",
        f"paths.features={root / 'features'}",
        f"paths.results={root / 'results'}",
        "data.synth.concepts=4",
        "data.synth.howto100m.videos=12",
        "data.synth.kinetics.classes=4",
        "data.synth.kinetics.train_per_class=2",
        "data.synth.kinetics.val_per_class=1",
        "data.synth.kinetics.test_per_class=1",
        "data.synth.audioset.train=6",
        "data.synth.audioset.eval=4",
        "data.synth.msrvtt.train=4",
        "data.synth.msrvtt.val=2",
        "data.synth.msrvtt.test=4",
        "data.synth.msrvtt.captions_per_video=3",
        "data.synth.youtube8m.videos=8",
        "features.shard_size=8",
        "features.workers=0",
    ]


@pytest.fixture
def tiny_config(tmp_path: Path) -> config_mod.Config:
    return config_mod.load(overrides=tiny_overrides(tmp_path))


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> config_mod.Config:
    """The tiny datasets generated (the four downstream and HowTo100M ones extracted) once per test session (treat as read-only)."""
    from cmgh.data.extract import decoded
    from cmgh.data.synth.generate import synthesize

    root = tmp_path_factory.mktemp("world")
    cfg = config_mod.load(overrides=tiny_overrides(root))
    synthesize(cfg, progress=False)
    decoded.build_vocab(cfg)
    for name in ("howto100m", "kinetics", "audioset", "msrvtt"):
        decoded.extract(cfg, name)
    return cfg
