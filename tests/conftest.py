"""Shared fixtures: the tiny config, a small generated world (generated once per session), and an
environment without a tracking store. Plain helpers are in tests/helpers.py (``tiny_overrides`` is
imported here, where the tests under tests/data still import it from)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmgh import config as config_mod
from tests.helpers import TRACKING_ENV, tiny_overrides


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


@pytest.fixture
def no_tracking_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No tracking store or rule name inherited from the shell: each test names its own store."""
    for var in TRACKING_ENV:
        monkeypatch.delenv(var, raising=False)
