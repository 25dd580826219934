"""Figures from the pre-training runs and the noise evaluation (PNG and PDF each)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cmgh import layout
from cmgh.plots import plot_cosine_hist, savefig, scores_frame
from cmgh.report.collect import order_key, pretrain_runs, results_order, train_logs


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
