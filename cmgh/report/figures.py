"""Figures from the pre-training runs, the noise evaluation and the headline metrics (PNG and PDF each)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmgh import layout
from cmgh.plots import plot_cosine_hist, savefig, scores_frame
from cmgh.report import stats
from cmgh.report.collect import order_key, pretrain_runs, results_order, train_logs
from cmgh.report.headline import Cell, panels


def figure_cosine_hist(results: Path, out: Path, order: tuple[str, ...]) -> list[Path]:
    data = scores_frame(pretrain_runs(results, order))
    return plot_cosine_hist(data, out, layout.CONFLICT_HIST_FIGURE, "Per-sample conflict cosine over training (all seeds)", order_key(order)) if len(data) else []


def figure_fractions(results: Path, out: Path, order: tuple[str, ...]) -> list[Path]:
    import matplotlib.pyplot as plt

    data = train_logs(pretrain_runs(results, order))
    if not len(data):
        return []
    key = order_key(order)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), squeeze=False)
    panels = (("conflict_fraction", "conflicting fraction (cos < 0)"), ("kept_fraction", "kept fraction (curriculum)"))
    for ax, (column, title) in zip(axes[0], panels, strict=True):
        if column not in data:
            continue
        for (backbone, variant), group in sorted(data.groupby(["backbone", "variant"]), key=lambda kv: (kv[0][0], key(kv[0][1]))):
            per_step = group.groupby("step")[column].agg(["mean", "min", "max"])
            smooth = per_step["mean"].rolling(5, min_periods=1, center=True).mean()
            line = ax.plot(per_step.index, smooth, label=f"{backbone}/{variant}")[0]
            ax.fill_between(per_step.index, per_step["min"], per_step["max"], color=line.get_color(), alpha=0.15, lw=0)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylim(-0.02, 1.02)
    axes[0][1].legend(fontsize=7)
    paths = savefig(fig, out, layout.FRACTIONS_FIGURE)
    plt.close(fig)
    return paths


def figure_training_curves(results: Path, out: Path, order: tuple[str, ...]) -> list[Path]:
    """Both losses over training per variant: the mean over seeds (smoothed over 10 steps) and the seeds' range as a band,
    one row per backbone: which variant learns faster, and whether one collapsed or diverged."""
    import matplotlib.pyplot as plt

    data = train_logs(pretrain_runs(results, order))
    if not len(data) or not {"loss_va", "loss_vt"} <= set(data.columns):
        return []
    key = order_key(order)
    backbones = sorted(data.backbone.unique())
    fig, axes = plt.subplots(len(backbones), 2, figsize=(9, 3.0 * len(backbones)), squeeze=False)
    for row, backbone in zip(axes, backbones, strict=True):
        runs = data[data.backbone == backbone]
        for ax, (column, title) in zip(row, (("loss_va", "video-audio NCE"), ("loss_vt", "video-text MIL-NCE")), strict=True):
            for variant, group in sorted(runs.groupby("variant"), key=lambda kv: key(kv[0])):
                per_seed = group.pivot_table(index="step", columns="seed", values=column)
                smooth = per_seed.rolling(10, min_periods=1).mean()
                line = ax.plot(smooth.index, smooth.mean(axis=1), label=f"{variant} ({per_seed.shape[1]} seeds)", lw=1.2)[0]
                ax.fill_between(smooth.index, smooth.min(axis=1), smooth.max(axis=1), color=line.get_color(), alpha=0.15, lw=0)
            ax.set_title(f"{backbone}: {title} loss")
            ax.set_xlabel("step")
        row[1].legend(fontsize=7)
    paths = savefig(fig, out, layout.TRAINING_CURVES_FIGURE)
    plt.close(fig)
    return paths


def figure_noise_roc(results: Path, out: Path, order: tuple[str, ...] | None = None, target: str = "either") -> list[Path]:
    """ROC curves of every indicator, one panel per (backbone, variant), first seed of each."""
    import matplotlib.pyplot as plt

    rocs = [p.parent / layout.NOISE_ROC for p in Path(results).glob(layout.eval_glob("noise"))]
    rocs = [p for p in rocs if p.is_file()]
    key = order_key(order if order is not None else results_order(results, {p.parts[-3] for p in rocs}))
    found: dict[tuple[str, str], Path] = {}
    for path in sorted(rocs, key=lambda p: (p.parts[-4], key(p.parts[-3]), p.parts[-2])):
        found.setdefault((path.parts[-4], path.parts[-3]), path)
    if not found:
        return []
    fig, axes = plt.subplots(1, len(found), figsize=(3.2 * len(found), 3.2), squeeze=False, sharey=True)
    for ax, ((backbone, variant), path) in zip(axes[0], found.items(), strict=True):
        roc = pd.read_csv(path)
        roc = roc[roc.target == target]
        for name, group in roc.groupby("indicator", sort=False):
            ax.plot(group.fpr, group.tpr, label=name, lw=1.2)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set_title(f"{backbone} / {variant} ({path.parts[-2]})")
        ax.set_xlabel("false positive rate")
    axes[0][0].set_ylabel(f"true positive rate (target: {target})")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    paths = savefig(fig, out, layout.NOISE_ROC_FIGURE)
    plt.close(fig)
    return paths


def figure_variants(cells: list[Cell], out: Path) -> list[Path]:
    """``figures/variants_per_task.{png,pdf}`` (:func:`draw_variants`); nothing without a headline cell."""
    import matplotlib.pyplot as plt

    fig = draw_variants(cells)
    if fig is None:
        return []
    paths = savefig(fig, out, layout.VARIANTS_FIGURE)
    plt.close(fig)
    return paths


def draw_variants(cells: list[Cell]) -> Any:
    """Each task's headline metric per variant, one panel per (backbone, task): every seed as a dot, the
    mean with its 95 % interval (``cells``: the front page's numbers, :func:`cmgh.report.headline.headline`), coloured by
    the verdict against the baseline; the random-init floor a dashed line with its interval as a band."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    blocks = panels(cells)
    if not blocks:
        return None
    colours = {"better": "#15803d", "worse": "#b91c1c", layout.BASELINE_VARIANT: "#111827", "": "#2563eb"}
    several = len({backbone for backbone, _ in blocks}) > 1
    ncols = min(4, len(blocks))
    nrows = -(-len(blocks) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(blocks):]:
        ax.set_visible(False)
    for ax, ((backbone, _), cells) in zip(axes.flat, blocks.items(), strict=False):
        col = cells[0].col
        floor = next((c for c in cells if c.variant == layout.RANDOM_VARIANT), None)
        shown = [c for c in cells if c.variant != layout.RANDOM_VARIANT]
        if floor is not None:
            ax.axhline(floor.mean, color="grey", ls="--", lw=1)
            if np.isfinite(floor.low) and np.isfinite(floor.high):
                ax.axhspan(floor.low, floor.high, color="grey", alpha=0.12, lw=0)
        for x, c in enumerate(shown):
            colour = colours[layout.BASELINE_VARIANT] if c.variant == layout.BASELINE_VARIANT else colours.get(c.verdict, colours[""])
            ax.scatter(x + 0.18 + np.linspace(-0.04, 0.04, c.n), c.values.to_numpy(), s=12, color=colour, alpha=0.45, lw=0, zorder=2)
            if np.isfinite(c.low) and np.isfinite(c.high):
                ax.errorbar(x, c.mean, yerr=[[c.mean - c.low], [c.high - c.mean]], fmt="none", ecolor=colour, elinewidth=1.6, capsize=4, zorder=3)
            ax.scatter([x], [c.mean], s=36, color=colour, marker="D", zorder=4)
        ax.set_xticks(range(len(shown)), [c.variant for c in shown], rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(shown) - 0.4)
        ax.set_title(f"{backbone}: {col.label}" if several else col.label, fontsize=10)
        ax.set_ylabel(col.metric + (" (lower is better)" if col.lower_is_better else ""), fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    handles = [Line2D([], [], color=colours[layout.BASELINE_VARIANT], marker="D", ls="", label=layout.BASELINE_VARIANT),
               Line2D([], [], color=colours["better"], marker="D", ls="", label="better than the baseline"),
               Line2D([], [], color=colours["worse"], marker="D", ls="", label="worse than the baseline"),
               Line2D([], [], color=colours[""], marker="D", ls="", label="not resolved"),
               Line2D([], [], color="grey", ls="--", label="random-init floor (band: its interval)")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"Mean over seeds and its {100 * stats.LEVEL:g} % interval per variant (dots: seeds)", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig
