"""`cmgh sweep` on the tiny world as the sweep tests run it: small trials over a small space, the CLI
in-process, and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmgh import config as config_mod
from tests.helpers import run_cli

# model.heads 4 is the base's (the baseline trial); 3 does not divide model.width 32 (a trial that fails)
SPACE = "sweep.space={pretrain.lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}, pretrain.harmonize.rule: {type: categorical, choices: [none, cmgh]}, model.heads: {type: categorical, choices: [2, 3, 4]}}"
TINY = [
    "pretrain.batch_size=8", "model.width=32", "model.depth=1", "pretrain.warmup_steps=1",
    "pretrain.curriculum.warmup_steps=1", "pretrain.score_every=100",
    "evaluate.kinetics.weight_decays=[0.01]", "evaluate.probe_max_iter=30", "evaluate.batch_size=16",
    "sweep.steps=4", "sweep.report_every=2", "sweep.max_failures=10", "sweep.prune_startup_trials=1",
    "sweep.backbone=ms", SPACE,
]


def sweep_overrides(world: config_mod.Config, results: Path, *extra: str) -> list[str]:
    return [f"paths.data={world.path('data')}", f"paths.features={world.path('features')}", f"paths.results={results}", *TINY, *extra]


def cli(capsys: pytest.CaptureFixture[str], overrides: list[str], *args: str) -> tuple[int, str, str]:
    sets = [arg for item in overrides for arg in ("--set", item)]
    return run_cli(capsys, "sweep", *args, "--threads", "1", *sets)


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cmgh: error: "), err
    assert "Traceback" not in err
    return lines[0][len("cmgh: error: ") :]
