"""Figures drawn both by a training run and by the report, written once and without torch: the
file writer (PNG + PDF) and the conflict-cosine histogram of the score dumps a run writes (one
run's histogram is its tracked artifact; the report draws every run's)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmgh import layout
from cmgh.io import atomic_path

Run = tuple[str, str, int, Path]  # backbone, variant, seed, run folder


def savefig(fig: Any, directory: Path, name: str) -> list[Path]:
    paths = []
    for ext in ("png", "pdf"):
        target = directory / f"{name}.{ext}"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=ext, dpi=120, bbox_inches="tight")
        paths.append(target)
    return paths


def scores_frame(runs: Iterable[Run]) -> pd.DataFrame:
    """The conflict cosine of every dumped sample: columns ``step, cos, backbone, variant, seed``."""
    frames = []
    for backbone, variant, seed, d in runs:
        for f in layout.score_files(d):
            t = pd.read_csv(f, usecols=["step", "cos"])
            frames.append(t.assign(backbone=backbone, variant=variant, seed=seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plot_cosine_hist(data: pd.DataFrame, out: Path, name: str, title: str, variant_key: Callable[[str], Any]) -> list[Path]:
    """One panel per backbone/variant (variants sorted by ``variant_key``): the cosine distribution
    early, midway and late in training."""
    import matplotlib.pyplot as plt

    keys = sorted(map(tuple, data[["backbone", "variant"]].drop_duplicates().to_numpy()), key=lambda k: (k[0], variant_key(k[1])))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), sharey=True, squeeze=False)
    bins = np.linspace(-1, 1, 41)
    for ax, (backbone, variant) in zip(axes[0], keys, strict=True):
        sel = data[(data.backbone == backbone) & (data.variant == variant)]
        steps = np.sort(sel.step.unique())
        thirds = [s for s in np.array_split(steps, min(3, len(steps))) if len(s)]
        for part, label in zip(thirds, ("early", "middle", "late"), strict=False):
            values = sel[sel.step.isin(part)].cos.to_numpy()
            ax.hist(values, bins=bins, histtype="step", density=True, label=f"{label} (steps {part[0]}-{part[-1]})")
        ax.axvline(0, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{backbone} / {variant}")
        ax.set_xlabel("conflict cosine")
    axes[0][0].set_ylabel("density")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title, y=1.04)
    paths = savefig(fig, out, name)
    plt.close(fig)
    return paths


def run_conflict_histogram(run_dir: Path, backbone: str, variant: str, seed: int) -> Path | None:
    """``conflict_hist.png`` of one pre-training run (its MLflow artifact); None without score dumps."""
    import matplotlib

    matplotlib.use("Agg")
    data = scores_frame([(backbone, variant, seed, Path(run_dir))])
    if not len(data):
        return None
    paths = plot_cosine_hist(data, Path(run_dir), "conflict_hist", f"Per-sample conflict cosine, seed {seed}", str)
    return next(p for p in paths if p.suffix == ".png")
