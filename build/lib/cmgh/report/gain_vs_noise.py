"""Downstream gain over the baseline against the injected noise rate, across results trees of the
same grid (one noise setting each, :mod:`cmgh.worlds`; config/ablation.yaml and config/study.yaml
build them). Each gain is the summary's paired comparison (:mod:`cmgh.report.stats`): mean,
interval and p over seeds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cmgh import layout
from cmgh.io import atomic_write_text
from cmgh.worlds import BOTH, MODALITIES, NoiseSetting
from cmgh.report.collect import collect, comparisons, noise_setting_of, results_order
from cmgh.report.columns import DOWNSTREAM, HEADLINE
from cmgh.plots import savefig
from cmgh.report.stats import LEVEL
from cmgh.report.summary import compare_variants

TABLE = f"{layout.NOISE_GAIN}.csv"
COLUMNS = ["modality", "noise_rate", "backbone", "variant", "task", "mean", "std", "low", "high", "p", "n"]


def gain_vs_noise(roots: Sequence[Path]) -> pd.DataFrame:
    """Per results tree (one noise setting each), each variant's paired gain over the baseline on the
    headline downstream metrics: columns :data:`COLUMNS` (``modality``, ``noise_rate``: the tree's
    setting; ``low, high``: the interval of the mean gain)."""
    rows = []
    for root in roots:
        long, setting = collect(root), noise_setting_of(root)
        for backbone in sorted(long.backbone.unique()):
            found = set(long[long.backbone == backbone].variant)
            for variant in comparisons(results_order(root, found)):
                for task in DOWNSTREAM:
                    c = compare_variants(long, backbone, HEADLINE[task], variant, layout.BASELINE_VARIANT)
                    if c is not None:
                        rows.append({"modality": setting.modality, "noise_rate": setting.rate, "backbone": backbone, "variant": variant, "task": task,
                                     "mean": c.mean, "std": c.std, "low": c.low, "high": c.high, "p": c.p, "n": c.n})
    return pd.DataFrame(rows, columns=COLUMNS)


def curves(table: pd.DataFrame) -> list[str]:
    """The modalities a :func:`gain_vs_noise` table has a curve for (each with its noisy trees; the
    clean tree, rate 0, is a point of every curve), in :data:`cmgh.worlds.MODALITIES` order."""
    noisy = set(table.loc[table["noise_rate"] > 0, "modality"])
    return [m for m in MODALITIES if m in noisy] or [BOTH]


def on_curve(table: pd.DataFrame, modality: str) -> pd.DataFrame:
    """The rows of ``modality``'s curve: its trees and the clean one."""
    keep = [NoiseSetting(m, r).on(modality) for m, r in zip(table["modality"], table["noise_rate"], strict=True)]
    return table[keep]


def figure_noise_gain(roots: Sequence[Path], out: Path, table_path: Path | None = None) -> list[Path]:
    """Downstream gain over the baseline vs injected noise rate (a point per rate the variants ran: the
    noisy ones alone when the clean world ran only the baseline), a row of panels per modality misaligned, error bars the gain's interval (none for a single seed);
    its table goes to ``table_path`` (default ``out/noise_gain.csv``)."""
    import matplotlib.pyplot as plt

    table = gain_vs_noise(roots)
    atomic_write_text(table_path or out / TABLE, table.to_csv(index=False))  # also when the clean world ran the baseline only
    if table.empty:
        return []
    rows = curves(table)
    fig, axes = plt.subplots(len(rows), len(DOWNSTREAM), figsize=(4.2 * len(DOWNSTREAM), 3.4 * len(rows)), squeeze=False)
    for row, modality in zip(axes, rows, strict=True):
        curve = on_curve(table, modality)
        for ax, task in zip(row, DOWNSTREAM, strict=True):
            for (backbone, variant), group in curve[curve.task == task].groupby(["backbone", "variant"]):
                group = group.sort_values("noise_rate")
                mean = group["mean"].to_numpy()
                yerr = np.nan_to_num(np.vstack([mean - group["low"].to_numpy(), group["high"].to_numpy() - mean]))
                ax.errorbar(group["noise_rate"], mean, yerr=yerr, marker="o", capsize=3, label=f"{backbone}/{variant}")
            ax.axhline(0.0, color="grey", lw=0.8, ls=":")
            ax.set_title(f"{HEADLINE[task].label}: gain over {layout.BASELINE_VARIANT}", fontsize=10)
            ax.set_xlabel("injected noise rate " + ("(audio and text)" if modality == BOTH else f"({modality} only)"))
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Gain over {layout.BASELINE_VARIANT}, paired by seed (mean, {100 * LEVEL:g} % interval over seeds)", y=1.01)
    fig.tight_layout()
    paths = savefig(fig, out, layout.NOISE_GAIN)
    plt.close(fig)
    return paths
