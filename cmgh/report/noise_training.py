"""Noise detection over training: how well each per-sample indicator flags the misaligned
triplets at each stage of pre-training, mean ± std and the interval of the mean over seeds
(:func:`cmgh.report.stats.interval`), from every run's score dumps; two indicators compared per
window, paired by seed (:func:`indicator_difference`).

Window: by default each run is cut into :data:`WINDOWS` windows of equal length, a multiple of
``pretrain.score_every`` so each window holds as many dumps. One epoch per window was the other
candidate; it is 3 steps at the default config (192 clips, batch 64: 50 windows of 192 triplets,
too noisy to read) and never completes at paper scale (one dumped batch every 10 000 steps), while
five windows read early -> late at any scale (default config: 30 steps, 1 920 scored triplets,
each clip scored about ten times). ``window`` overrides it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmgh import layout
from cmgh.config import resolve_path
from cmgh.evaluate import TASK_DATASETS
from cmgh.report import stats
from cmgh.report.collect import Run, order_key, pretrain_runs, results_order, run_config
from cmgh.report.tables import cell, to_markdown

log = logging.getLogger(__name__)

WINDOWS = 5
TARGET = "either"  # a triplet with misaligned audio or text
TABLE = "noise_over_training"  # tables/noise_over_training.{csv,md}
KEYS = ["backbone", "variant", "dataset", "step", "step_to"]  # a row of the table: one corpus and window of one variant
CAPTION = (f"Noise detection over training: AUROC of each per-sample indicator for flagging misaligned triplets "
           f"(target: {TARGET}) per pre-training corpus with generated ground truth and window of training steps, mean ± std over seeds "
           f"[{100 * stats.LEVEL:g} % interval of the mean: bootstrap, narrower than its level with few seeds; with 2 seeds Student's t].")


def default_window(cfg: Mapping[str, Any]) -> int:
    """Steps per window: the run cut into :data:`WINDOWS`, rounded up to a multiple of the dump interval."""
    pretrain = cfg.get("pretrain", {})
    steps, every = int(pretrain.get("steps", 1)), max(1, int(pretrain.get("score_every", 1)))
    return every * max(1, math.ceil(steps / (WINDOWS * every)))


def _run_table(run: Run, window: int | None) -> pd.DataFrame | None:
    """One run's AUROC per corpus with ground truth and window (columns ``dataset, step, step_to, n,
    <indicator>``); None when it cannot have one."""
    backbone, variant, seed, run_dir = run
    cfg = run_config(run_dir)
    if not layout.score_files(run_dir):
        log.info("%s: no score dumps, skipped in the noise-over-training table", run_dir)
        return None
    if not cfg:
        log.info("%s: no %s (data and features paths unknown), skipped in the noise-over-training table", run_dir, layout.CONFIG)
        return None
    data_root, features_root = resolve_path(cfg["paths"]["data"]), resolve_path(cfg["paths"]["features"])
    fmt = str(cfg.get("features", {}).get("format", "decoded"))
    from cmgh.evaluate.noise_truth import labelled_corpora
    from cmgh.evaluate.training_noise import auroc_over_training

    trained = [str(e["dataset"]) for e in cfg.get("pretrain", {}).get("corpora", [{"dataset": TASK_DATASETS["noise"]}])]
    corpora = [c for c in labelled_corpora(data_root, trained) if (layout.corpus_dir(features_root, c, fmt) / layout.FEATURE_INDEX).is_file()]
    if not corpora:
        log.info("%s: no corpus of %s has a %s and its features (no ground truth), skipped in the noise-over-training table",
                 run_dir, trained, layout.NOISE_LABELS)
        return None
    size = window or default_window(cfg)
    table = auroc_over_training(run_dir, data_root, features_root, size, fmt=fmt, datasets=corpora)
    if table.empty:
        return None
    steps = int(cfg.get("pretrain", {}).get("steps", 0)) or int(table["step"].max()) + size
    suffix = f"/{TARGET}"
    indicators = {c: c.removesuffix(suffix) for c in table.columns if c.endswith(suffix)}
    out = table[["dataset", "step", "n", *indicators]].rename(columns=indicators)
    out.insert(2, "step_to", np.minimum(out["step"] + size, steps) - 1)
    return out.assign(backbone=backbone, variant=variant, seed=seed)


def per_seed(results: Path, window: int | None = None, order: tuple[str, ...] | None = None) -> pd.DataFrame:
    """One row per run, corpus with ground truth and window: :data:`KEYS`, ``seed``, ``n``
    (triplets scored) and each indicator's AUROC; what the table aggregates and
    :func:`indicator_difference` pairs."""
    frames = [t for run in pretrain_runs(results, order) if (t := _run_table(run, window)) is not None]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*KEYS, "seed", "n"])


def indicator_difference(data: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """AUROC of indicator ``a`` minus ``b`` (e.g. the conflict cosine against a per-sample loss) per
    row of :data:`KEYS`, paired by seed (``data``: :func:`per_seed`); columns :data:`KEYS`, ``mean,
    std, low, high, p, n, test``. Windows of one run share its model, so they are not pooled as
    replicates: the seeds are."""
    rows = []
    for key, group in data.groupby(KEYS, sort=False):
        by_seed = group.set_index("seed")
        c = stats.paired(by_seed[a], by_seed[b])
        if c is not None:
            rows.append({**dict(zip(KEYS, key, strict=True)), "mean": c.mean, "std": c.std, "low": c.low, "high": c.high,
                         "p": c.p, "n": c.n, "test": c.test})
    return pd.DataFrame(rows, columns=[*KEYS, "mean", "std", "low", "high", "p", "n", "test"])


def noise_over_training(results: Path, window: int | None = None, order: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Per backbone, variant, corpus (``dataset``: every pre-training corpus with a ground truth)
    and window: ``seeds``, mean ``triplets`` per seed, and per indicator ``<name> mean``,
    ``<name> std``, ``<name> low`` and ``<name> high`` over seeds (empty frame when no run has
    dumps and ground truth)."""
    data = per_seed(results, window, order)
    return aggregate(data, order if order is not None else results_order(results, set(data["variant"])))


def aggregate(data: pd.DataFrame, order: tuple[str, ...]) -> pd.DataFrame:
    """:func:`noise_over_training` from :func:`per_seed`'s rows, variants in ``order``."""
    if data.empty:
        return pd.DataFrame(columns=[*KEYS, "seeds", "triplets"])
    key = order_key(order)
    indicators = [c for c in data.columns if c not in (*KEYS, "n", "seed")]
    groups = data.groupby(KEYS)
    out = groups.agg(seeds=("seed", "nunique"), triplets=("n", "mean"))
    for name in indicators:
        out[f"{name} mean"] = groups[name].mean()
        out[f"{name} std"] = groups[name].std()
        ends = groups[name].apply(lambda v: stats.interval(v.dropna().to_numpy())[:2])
        out[f"{name} low"], out[f"{name} high"] = ends.str[0], ends.str[1]
    out = out.reset_index()
    rank = out["variant"].map({v: i for i, v in enumerate(sorted(out["variant"].unique(), key=key))})
    return out.assign(_rank=rank).sort_values(["backbone", "_rank", "dataset", "step"], kind="stable").drop(columns="_rank").reset_index(drop=True)


def markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """The caption and one row per backbone, variant and window, ``mean ± std [low, high]`` cells."""
    if table.empty:
        return f"{CAPTION}\n\nNo pre-training run with score dumps and noise ground truth was found.\n"
    names = [c.removesuffix(" mean") for c in table.columns if c.endswith(" mean")]
    shown = pd.DataFrame({
        "backbone": table["backbone"],
        "variant": table["variant"],
        "corpus": table["dataset"],
        "steps": [f"{a}-{b}" for a, b in zip(table["step"], table["step_to"], strict=True)],
        "seeds": table["seeds"],
        **{name: [_cell(*map(float, values), digits) for values in zip(*(table[f"{name} {q}"] for q in ("mean", "std", "low", "high")), strict=True)]
           for name in names},
    })
    return f"{CAPTION}\n\n" + to_markdown(shown)


def _cell(mean: float, std: float, low: float, high: float, digits: int) -> str:
    text = cell(mean, std, digits)
    return f"{text} [{low:.{digits}f}, {high:.{digits}f}]" if np.isfinite(low) and np.isfinite(high) else text
