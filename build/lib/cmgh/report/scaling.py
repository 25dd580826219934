"""Gain from adding YouTube-8M to the pre-training corpora, without vs with harmonization.

CMGH's second claim: harmonization lets pre-training add the non-narrative YouTube-8M to
HowTo100M and improve, where plain cross-modality alignment is hurt by its extra misalignment.
Measured per method and backbone on the headline downstream metrics as

* ``gain``: metric(method + YouTube-8M) - metric(method), paired by seed;
* ``gain_minus_reference``: a method's gain minus the baseline's gain on the same corpus mixture,
  paired by seed (the claim: positive for harmonization),

each with its 95 % t-interval over seeds. Which variants are compared comes from their resolved
configs alone (:func:`pairs`), so a config needs no extra key: ``config/scaling.yaml`` defines
each method once without and once with YouTube-8M in ``pretrain.corpora``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmgh import config as cmgh_config
from cmgh import keypaths, layout
from cmgh.errors import ConfigError, DataError
from cmgh.io import atomic_write_text
from cmgh.report.collect import run_config, run_folders
from cmgh.report.columns import DOWNSTREAM, HEADLINE, Column
from cmgh.plots import savefig
from cmgh.report.stats import t_interval
from cmgh.report.summary import seed_values
from cmgh.report.tables import to_markdown

log = logging.getLogger(__name__)

ADDED = "youtube8m"  # the corpus whose addition is measured
GAIN, DIFFERENCE = "gain", "gain_minus_reference"
COLUMNS = ["backbone", "method", "with_added", "quantity", "reference", "task", "metric", "mean", "std", "ci_low", "ci_high", "n"]


@dataclass(frozen=True)
class Pair:
    """Two variants whose resolved configs differ only in ``pretrain.corpora``, ``with_added``'s
    being ``method``'s plus YouTube-8M; ``mixture`` is ``with_added``'s normalized corpora (to 9
    digits: weights 1:2 and 0.3:0.6 are one mixture), which matches a method with its baseline pair."""

    method: str
    with_added: str
    mixture: tuple[tuple[str, float], ...]


# --------------------------------------------------------------------------- the pairing rule


def _weights(tree: Mapping[str, Any]) -> dict[str, float]:
    return dict(cmgh_config.corpora(tree["pretrain"]))


def adds_corpus(without: Mapping[str, Any], with_added: Mapping[str, Any], added: str = ADDED) -> bool:
    """``with_added``'s corpora are ``without``'s plus ``added`` at a positive weight, the shared
    corpora keeping their relative weights."""
    a, b = _weights(without), _weights(with_added)
    if added in a or b.get(added, 0.0) <= 0.0 or set(b) - {added} != set(a):
        return False
    rest = 1.0 - b[added]
    return all(math.isclose(b[name] / rest, weight, rel_tol=1e-9) for name, weight in a.items())


def pairs(configs: Mapping[str, Mapping[str, Any]], added: str = ADDED) -> list[Pair]:
    """Every (without, with) pair of variants, from their resolved configs (variant -> tree): they
    pair when the trees are equal but for ``pretrain.corpora`` and the second adds ``added``.
    In the configs' order of the variant without."""
    rest = {}
    for name, tree in configs.items():
        flat = keypaths.flatten(tree)
        flat.pop("pretrain.corpora", None)
        rest[name] = flat
    return [Pair(a, b, tuple((name, round(w, 9)) for name, w in _weights(configs[b]).items())) for a in configs for b in configs
            if a != b and rest[a] == rest[b] and adds_corpus(configs[a], configs[b], added)]


def variant_configs(cfg: cmgh_config.Config) -> dict[str, dict[str, Any]]:
    """Each variant of a config, resolved: the input of :func:`pairs`."""
    return {name: cmgh_config.for_variant(cfg, name).to_dict() for name in cfg.variants}


def results_configs(results: Path) -> dict[str, dict[str, Any]]:
    """Each variant's resolved config in a results tree: from the workflow's resolved config, else
    from the config a run of the variant wrote beside its outputs."""
    path = layout.resolved_config(results)
    if path.is_file():
        return variant_configs(cmgh_config.load(path))
    configs: dict[str, dict[str, Any]] = {}
    for _, variant, _, run in run_folders(results):
        if variant not in configs and (run / layout.CONFIG).is_file():
            try:
                configs[variant] = cmgh_config.from_dict(run_config(run)).to_dict()
            except ConfigError as exc:
                raise DataError(f"{run / layout.CONFIG}: not a resolved run config ({exc})") from None
    return configs


# --------------------------------------------------------------------------- gains


def _gain(long: pd.DataFrame, backbone: str, col: Column, pair: Pair) -> pd.Series:
    """metric(with) - metric(without), by seed, over the seeds both ran."""
    return (seed_values(long, backbone, col, pair.with_added) - seed_values(long, backbone, col, pair.method)).dropna()


def gain_table(long: pd.DataFrame, found: Sequence[Pair]) -> pd.DataFrame:
    """Per backbone, pair and headline downstream metric: the gain, then each method's gain minus
    the baseline's on the same mixture (columns :data:`COLUMNS`)."""
    reference = {pair.mixture: pair for pair in found if pair.method == layout.BASELINE_VARIANT}
    rows = []

    def row(backbone: str, pair: Pair, quantity: str, ref: str, col: Column, values: pd.Series) -> None:
        if values.empty:
            return
        mean, std, low, high, n = t_interval(values.to_numpy())
        rows.append(dict(zip(COLUMNS, (backbone, pair.method, pair.with_added, quantity, ref, col.task, col.metric, mean, std, low, high, n),
                             strict=True)))

    for backbone in sorted(long.backbone.unique()):
        for quantity in (GAIN, DIFFERENCE):
            for pair in found:
                ref = reference.get(pair.mixture)
                if quantity == DIFFERENCE and (ref is None or ref == pair):
                    continue
                for task in DOWNSTREAM:
                    col = HEADLINE[task]
                    gain = _gain(long, backbone, col, pair)
                    if quantity == GAIN:
                        row(backbone, pair, GAIN, "", col, gain)
                    else:
                        row(backbone, pair, DIFFERENCE, ref.method, col, (gain - _gain(long, backbone, col, ref)).dropna())
    return pd.DataFrame(rows, columns=COLUMNS)


# --------------------------------------------------------------------------- rendering

CAPTION = (
    "Gain from adding YouTube-8M to the pre-training corpora. *gain*: metric(method + YouTube-8M) − metric(method), "
    "paired by seed; *gain − baseline gain*: the method's gain minus the baseline's, paired by seed (CMGH's claim: "
    "positive with harmonization). Mean [95 % t-interval over seeds]; bold: the interval excludes 0."
)


def _cell(mean: float, low: float, high: float, digits: int) -> str:
    text = f"{mean:+.{digits}f}"
    if not np.isfinite(low):
        return text
    text += f" [{low:+.{digits}f}, {high:+.{digits}f}]"
    return f"**{text}**" if low > 0 or high < 0 else text


def markdown(table: pd.DataFrame) -> str:
    """One row per backbone, pair and quantity; one column per headline downstream metric."""
    cols = [HEADLINE[t] for t in DOWNSTREAM if t in set(table.task)]
    keys = table[["backbone", "method", "with_added", "quantity", "reference"]].drop_duplicates()
    out = []
    for key in keys.itertuples(index=False):
        sel = table[(table.backbone == key.backbone) & (table.method == key.method) & (table.with_added == key.with_added)
                    & (table.quantity == key.quantity)]
        label = "gain" if key.quantity == GAIN else f"gain − {key.reference} gain"
        line = {"backbone": key.backbone, "method": key.method, "with YouTube-8M": key.with_added, "quantity": label}
        for col in cols:
            cell = sel[sel.task == col.task]
            line[col.label + (" ↓" if col.lower_is_better else "")] = (
                _cell(*cell[["mean", "ci_low", "ci_high"]].iloc[0], col.digits) if len(cell) else "-")
        counts = sorted(set(sel.n))
        line["seeds"] = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
        out.append(line)
    return f"{CAPTION}\n\n" + to_markdown(pd.DataFrame(out))


def figure(table: pd.DataFrame, out: Path) -> list[Path]:
    """Top row: each method's gain from adding YouTube-8M; bottom row (with a baseline pair): that
    gain minus the baseline's. One panel per downstream metric, one marker per backbone, 95 % t-intervals."""
    import matplotlib.pyplot as plt

    quantities = [q for q in (GAIN, DIFFERENCE) if q in set(table.quantity)]
    tasks = [t for t in DOWNSTREAM if t in set(table.task)]
    methods = list(dict.fromkeys(zip(table.method, table.with_added, strict=True)))
    names = [m if sum(m == other for other, _ in methods) == 1 else f"{m}/{w}" for m, w in methods]
    backbones = sorted(table.backbone.unique())
    fig, axes = plt.subplots(len(quantities), len(tasks), figsize=(4.2 * len(tasks), 3.3 * len(quantities)), squeeze=False)
    for r, quantity in enumerate(quantities):
        for c, task in enumerate(tasks):
            ax, col = axes[r][c], HEADLINE[task]
            for b, backbone in enumerate(backbones):
                sel = table[(table.quantity == quantity) & (table.task == task) & (table.backbone == backbone)]
                x = [methods.index(m) + 0.15 * (b - (len(backbones) - 1) / 2) for m in zip(sel.method, sel.with_added, strict=True)]
                mean = sel["mean"].to_numpy()
                yerr = np.nan_to_num(np.vstack([mean - sel["ci_low"].to_numpy(), sel["ci_high"].to_numpy() - mean]))
                ax.errorbar(x, mean, yerr=yerr, fmt="o", capsize=3, label=backbone)
            ax.axhline(0.0, color="grey", lw=0.8, ls=":")
            ax.set_xticks(range(len(methods)), names if quantity == GAIN else [n if m != layout.BASELINE_VARIANT else "" for n, (m, _) in zip(names, methods, strict=True)])
            ax.set_xlim(-0.5, len(methods) - 0.5)
            ax.set_title(col.label + (" (↓ better)" if col.lower_is_better else ""))
            if c == 0:
                ax.set_ylabel("gain from adding YouTube-8M" if quantity == GAIN else f"gain − {layout.BASELINE_VARIANT} gain")
    axes[0][-1].legend(fontsize=7, title="backbone", title_fontsize=7)
    fig.suptitle("Gain from adding YouTube-8M, without vs with harmonization (mean, 95 % t-interval over seeds)", y=1.02)
    fig.tight_layout()
    paths = savefig(fig, out, layout.SCALING_FIGURE)
    plt.close(fig)
    return paths


def build_scaling(results: Path, long: pd.DataFrame) -> dict[str, list[Path]]:
    """``tables/scaling.{csv,md}`` and ``figures/scaling_gain.{png,pdf}`` when the tree's variants
    hold such pairs with downstream metrics; nothing otherwise."""
    found = pairs(results_configs(results))
    if not found:
        return {"tables": [], "figures": []}
    table = gain_table(long, found)
    if table.empty:
        log.info("%s: variant pairs %s have no downstream metrics to compare", results, [(p.method, p.with_added) for p in found])
        return {"tables": [], "figures": []}
    csv, md = layout.scaling_table(results, "csv"), layout.scaling_table(results, "md")
    atomic_write_text(csv, table.to_csv(index=False, float_format="%.6g"))
    atomic_write_text(md, markdown(table))
    layout.figures_dir(results).mkdir(parents=True, exist_ok=True)
    return {"tables": [csv, md], "figures": figure(table, layout.figures_dir(results))}
