"""What an evaluation takes from the checkpoint's own config, and the overrides that therefore cannot apply.

Import-light (no torch): the CLI refuses such an override before it loads anything.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from cmgh import config as config_mod
from cmgh import layout
from cmgh.config import Config, parse_override
from cmgh.errors import ConfigError

log = logging.getLogger(__name__)

CHECKPOINT_SECTIONS = ("model", "pretrain")  # what an evaluation takes from the config.yaml beside the checkpoint
DECIDED_BY_CHECKPOINT = (*CHECKPOINT_SECTIONS, "variants")  # ...and so cannot be overridden (the run's variant is resolved in it)


def run_folder(checkpoint: str | Path) -> Path:
    """The run folder of a checkpoint argument (the folder itself, or a checkpoint file's folder)."""
    path = Path(checkpoint)
    return path if path.is_dir() or not path.suffix else path.parent


def check_overrides(checkpoint: str | Path, overrides: Sequence[str]) -> None:
    """Refuse ``--set`` overrides an evaluation would silently drop: with a config.yaml beside the
    checkpoint, its :data:`CHECKPOINT_SECTIONS` decide the encoder (its variant already resolved in
    them), not the command's config. Without one (an old run) the command's config decides, and applies."""
    run_cfg = run_folder(checkpoint) / layout.CONFIG
    if not run_cfg.is_file():
        return
    for item in overrides:
        keys, _ = parse_override(item)
        if keys[0] in DECIDED_BY_CHECKPOINT:
            raise ConfigError(
                f"--set {item}: {'.'.join(keys)} cannot change an evaluation: the checkpoint's config ({run_cfg}) decides it "
                f"(expected no override of {', '.join(f'{s}.*' for s in DECIDED_BY_CHECKPOINT)})"
            )


def evaluation_config(cfg: Config, run_dir: Path, variant: str) -> Config:
    """``cfg`` with the run's :data:`CHECKPOINT_SECTIONS` (its config.yaml), else the variant's: what
    every evaluation of a run computes with, whether it scores the encoder or the run's records."""
    run_cfg_path = Path(run_dir) / layout.CONFIG
    if run_cfg_path.is_file():
        run = config_mod.load(run_cfg_path).to_dict()
        return config_mod.from_dict(config_mod.deep_merge(cfg.to_dict(), {key: run[key] for key in CHECKPOINT_SECTIONS}))
    log.warning("%s: no %s beside the checkpoint; using the given config's model section", run_dir, layout.CONFIG)
    return config_mod.for_variant(cfg, variant) if variant in cfg.variants else cfg
