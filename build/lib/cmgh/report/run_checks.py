"""Runs that failed rather than measured something: flagged, listed on the results page, and left
out of the primary analysis so one of them cannot dominate a mean over five seeds (its numbers
stay in every table and file; the exploratory per-world gains still include it).

A pre-training run (backbone, variant, seed of one world) is flagged

* ``diverged`` when the last ``loss`` of its ``train_log.jsonl`` is not finite (NaN, inf);
* ``no value`` when a headline downstream metric is NaN;
* ``collapsed`` when a headline downstream metric is below the random-init floor of its world
  (the mean over seeds of the ``random`` variant's evaluations; the mean over every world when the
  world has none: the random init does not see the pre-training data) by more than the metric's
  equivalence margin (``worlds.analysis.margins``). Below an untrained encoder by more than
  the margin, pre-training destroyed what the random features carried: a collapsed
  representation, not an effect of the noise. No floor (``evaluate.random_init: false``), no check.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from cmgh import layout
from cmgh.report.collect import noise_setting_of, run_folders
from cmgh.report.columns import Column
from cmgh.report.pooled import KEYS
from cmgh.report.tables import to_markdown

DIVERGED, NO_VALUE, COLLAPSED = "diverged", "no value", "collapsed"


def final_loss(run_dir: Path) -> float | None:
    """The ``loss`` of the last line of a run's training log; None without a log or a loss."""
    path = Path(run_dir) / layout.TRAIN_LOG
    if not path.is_file():
        return None
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        return None
    value = json.loads(lines[-1]).get("loss")  # json reads NaN and Infinity as floats
    return None if value is None else float(value)


def final_losses(roots: Iterable[Path]) -> pd.DataFrame:
    """Every run's final loss: columns :data:`cmgh.report.pooled.KEYS` and ``loss``."""
    rows = []
    for root in roots:
        setting = noise_setting_of(Path(root))
        for backbone, variant, seed, run in run_folders(Path(root)):
            loss = final_loss(run)
            if loss is not None:
                rows.append({"modality": setting.modality, "noise_rate": setting.rate, "backbone": backbone,
                             "variant": variant, "seed": seed, "loss": loss})
    return pd.DataFrame(rows, columns=[*KEYS, "loss"])


def _floors(values: pd.DataFrame, col: Column) -> tuple[dict[tuple[str, float, str], float], dict[str, float]]:
    sel = values[(values.variant == layout.RANDOM_VARIANT) & (values.task == col.task) & (values.metric == col.metric)]
    per_world = sel.groupby(["modality", "noise_rate", "backbone"])["value"].mean().to_dict()
    overall = sel.groupby("backbone")["value"].mean().to_dict()
    return per_world, overall


def flag_runs(values: pd.DataFrame, losses: pd.DataFrame, columns: Iterable[Column], margins: Mapping[str, float]) -> pd.DataFrame:
    """The flagged runs: columns :data:`cmgh.report.pooled.KEYS`, ``reason`` (one row per run
    and reason) and ``detail``; the random-init evaluations are never flagged."""
    rows = []
    for _, run in losses.iterrows():
        if not math.isfinite(run["loss"]):
            rows.append({**{k: run[k] for k in KEYS}, "reason": DIVERGED, "detail": f"final loss {run['loss']}"})
    for col in columns:
        sel = values[(values.task == col.task) & (values.metric == col.metric) & (values.variant != layout.RANDOM_VARIANT)]
        per_world, overall = _floors(values, col)
        margin = margins.get(col.metric)
        for _, run in sel.iterrows():
            keys = {k: run[k] for k in KEYS}
            value = float(run["value"])
            if not math.isfinite(value):
                rows.append({**keys, "reason": NO_VALUE, "detail": f"{col.label} {value}"})
                continue
            floor = per_world.get((run["modality"], run["noise_rate"], run["backbone"]), overall.get(run["backbone"]))
            if floor is None or margin is None:
                continue
            below = (value - floor) if col.lower_is_better else (floor - value)
            if below > margin:
                rows.append({**keys, "reason": COLLAPSED,
                             "detail": f"{col.label} {value:.{col.digits}f}, random init {floor:.{col.digits}f} (margin {margin:g})"})
    return pd.DataFrame(rows, columns=[*KEYS, "reason", "detail"])


def excluded(values: pd.DataFrame, flags: pd.DataFrame) -> pd.DataFrame:
    """``values`` without the flagged runs' rows (every task of a flagged run goes)."""
    if flags.empty:
        return values
    bad = pd.MultiIndex.from_frame(flags[KEYS].drop_duplicates())
    return values[~pd.MultiIndex.from_frame(values[KEYS]).isin(bad)]


def flags_section(flags: pd.DataFrame, floor_known: bool) -> str:
    """The page's list of flagged runs, or the plain statement that there are none."""
    rule = ("" if floor_known else " No random-init evaluation: the collapse check (below the random-init floor by more than the margin) "
            "was not run; set `evaluate.random_init: true`.")
    if flags.empty:
        return "No run diverged (non-finite final loss), lost a metric or collapsed below the random-init floor." + rule
    shown = flags.assign(world=[f"{m} {r:g}" if r > 0 else "clean" for m, r in zip(flags.modality, flags.noise_rate, strict=True)])
    shown = shown[["world", "backbone", "variant", "seed", "reason", "detail"]]
    return (f"{flags[KEYS].drop_duplicates().shape[0]} run(s) flagged; they stay in every table and file but are left out of "
            "the primary analysis:" + rule + "\n\n" + to_markdown(shown).rstrip("\n"))
