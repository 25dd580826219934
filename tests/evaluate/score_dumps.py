"""A finished pre-training run made of files only: score dumps with hand-picked values, the corpus
index and ground truth they join with, so noise detection over training has answers computed by hand.

Four HowTo100M videos, one 2-second clip each: v0's audio is misaligned, v1's text, v2 and v3 are
clean. Steps 0-1 train on all four clips, steps 2-3 on v0, v2, v3 only (no misaligned text there).
With windows of 2 steps, ``loss_va`` (and ``-cos``, so the meeting point's cosine ranks alike) gives:

* steps 0-1: audio AUROC 9/12 = 0.75, AP (1/1 + 2/5) / 2 = 0.7; text AUROC 3/12 = 0.25, AP
  (1/4 + 2/8) / 2 = 0.25; either AUROC 8/16 = 0.5, AP (1/1 + 2/4 + 3/5 + 4/8) / 4 = 0.65;
* steps 2-3: audio and either AUROC 1, AP 1; text undefined (no misaligned triplet: NaN).

``cos_representation`` is ``+loss_va``: with its sign (a low cosine flags noise) it ranks the
other way, AUROC 1 - 0.75 = 0.25 for audio in steps 0-1. ``loss_vt`` is constant: AUROC 0.5.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cmgh import config as config_mod
from cmgh import layout
from cmgh.data.datasets import noise_labels

ITEMS = {"i0": "v0", "i1": "v1", "i2": "v2", "i3": "v3"}
LOSS_VA = {  # step -> item -> value
    0: {"i0": 0.9, "i1": 0.1, "i2": 0.2, "i3": 0.3},
    1: {"i0": 0.4, "i1": 0.5, "i2": 0.6, "i3": 0.7},
    2: {"i0": 0.8, "i2": 0.1, "i3": 0.3},
    3: {"i0": 0.95, "i2": 0.2, "i3": 0.4},
}
EXPECTED = {  # (target, window start) -> (AUROC, AP) of loss_va
    ("audio", 0): (0.75, 0.7), ("text", 0): (0.25, 0.25), ("either", 0): (0.5, 0.65),
    ("audio", 2): (1.0, 1.0), ("text", 2): (float("nan"), float("nan")), ("either", 2): (1.0, 1.0),
}


def world_config(root: Path, *overrides: str) -> config_mod.Config:
    """The default config with every path under ``root``, 4 steps, a dump every step, windows of 2."""
    return config_mod.load(overrides=[
        f"paths.data={root / 'data'}", f"paths.features={root / 'features'}", f"paths.results={root / 'results'}",
        "pretrain.steps=4", "pretrain.score_every=1", "evaluate.noise_training.window=2", "tracking.enabled=false", *overrides,
    ])  # fmt: skip


def write_world(cfg: config_mod.Config) -> None:
    """The ground truth and the corpus index (what the dumps' item ids are joined with)."""
    labels = pd.DataFrame({"video_id": list(ITEMS.values()), "clip_start": 0.0, "clip_end": 2.0,
                           "audio_aligned": [0, 1, 1, 1], "text_aligned": [1, 0, 1, 1]})
    path = layout.noise_labels(cfg.path("data"), "howto100m")
    path.parent.mkdir(parents=True, exist_ok=True)
    noise_labels.write_noise_labels(path, labels)
    index = layout.feature_index(cfg.path("features"), "howto100m")
    index.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"item_id": list(ITEMS), "video_id": list(ITEMS.values()), "clip_start": 0.0, "clip_end": 2.0}).to_parquet(index)


def write_run(cfg: config_mod.Config, seed: int = 0, variant: str = "baseline", shift: float = 0.0, dumps: bool = True) -> Path:
    """A finished run of ``variant``: config.yaml, summary.json and (``dumps``) one score dump per
    step; ``shift`` is added to v0's losses from step 2 on (another seed's numbers)."""
    run = layout.run_dir(cfg.path("results"), "ms", variant, seed)
    run.mkdir(parents=True, exist_ok=True)
    cfg.write(run)
    (run / layout.SUMMARY).write_text(json.dumps({"backbone": "ms", "variant": variant, "seed": seed, "steps": 4}))
    for step, values in LOSS_VA.items() if dumps else ():
        rows = [{"step": step, "item_id": item, "dataset": "howto100m", "clip_start": 0.0, "clip_end": 2.0,
                 "cos": -(v + (shift if item == "i0" and step >= 2 else 0.0)), "cos_representation": v,
                 "loss_va": v + (shift if item == "i0" and step >= 2 else 0.0), "loss_vt": 1.0, "kept": True}
                for item, v in values.items()]
        path = layout.scores_file(run, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(path, index=False)
    return run
