"""Pre-training runs tracked in a real MLflow store through the in-process CLI, and reading their runs
back: shared by the tracking and lineage tests."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from cmgh import cli
from cmgh import config as config_mod

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

SMALL = ["pretrain.batch_size=8", "pretrain.steps=6", "model.width=32", "model.heads=2", "model.depth=1"]


def config_file(world: config_mod.Config, tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(world.to_dict(), sort_keys=False))
    return path


def cli_pretrain(cfg_file: Path, out: Path, variant: str, seed: int, *extra: str) -> None:
    """`cmgh pretrain` in-process; ``extra`` holds config overrides and ``--flags``."""
    args = ["pretrain", "--config", str(cfg_file), "--backbone", "ms", "--variant", variant, "--seed", str(seed), "--out", str(out)]
    flags = [e for e in extra if e.startswith("--") or e.isdigit()]
    sets = [item for s in [*SMALL, *extra] if s not in flags for item in ("--set", s)]
    assert cli.main([*args, *flags, *sets]) == 0


def runs_of(client: MlflowClient, experiment: str, filter_string: str = "") -> list:
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    return list(client.search_runs([exp.experiment_id], filter_string=filter_string))
