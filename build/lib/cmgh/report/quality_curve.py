"""Benefit against detection quality: the dose-response of the curriculum on each primary endpoint.

Every curriculum variant's pooled gain (:mod:`cmgh.report.primary`) is placed at its detector's AUROC
for the misaligned pairs: the ``quality`` controls at their target AUROC, the ``oracle`` at 1, the
``conflict`` and ``loss`` scorers at the AUROC their own runs measured (each run's ``noise_training``
windows, averaged over windows, then over seeds and the modality's noisy worlds). A flat curve up to
AUROC 1 says the schedule cannot exploit even a perfect detector; a rising one read at the cosine's
AUROC says how much a better detector would be worth.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cmgh.plots import savefig
from cmgh.report import detection_over_training, primary, stats
from cmgh.report.detection_over_training import CONFLICT, MATCHED_LOSS, TARGET
from cmgh.report.tables import to_markdown
from cmgh.worlds import NoiseSetting

FIGURE = "quality_curve"

def indicator_of(curriculum: Mapping[str, Any]) -> str | None:
    """The noise_training indicator a scorer ranks by (cmgh.harmonize.scorers): the conflict cosine at the
    representation, or the loss of the droppable terms (the whole triplet's, or the video-text term's)."""
    scorer = curriculum.get("scorer", "conflict")
    if scorer == "conflict":
        return CONFLICT
    if scorer == "loss":
        return MATCHED_LOSS["either"] if curriculum.get("granularity", "triplet") == "triplet" else MATCHED_LOSS["text"]
    return None
ORACLE_AUROC = 1.0


@dataclass(frozen=True)
class Point:
    """One curriculum variant on one endpoint and backbone: its detector's AUROC and its pooled gain."""

    variant: str
    scorer: str
    rule: str
    auroc: float
    measured: bool  # the run's own AUROC (conflict, loss) rather than a set one (quality, oracle)
    gain: Any  # cmgh.report.pooled.Pooled


def curriculum_of(tree: Mapping[str, Any], variant: str) -> dict[str, Any]:
    """The variant's curriculum section: its entry over the tree's resolved one."""
    base = dict(tree.get("pretrain", {}).get("curriculum", {}))
    entry = tree.get("variants", {}).get(variant, {}) or {}
    return {**base, **(entry.get("pretrain", {}).get("curriculum", {}) or {})}


def measured_auroc(windows: Mapping[Path, pd.DataFrame], settings: Mapping[Path, NoiseSetting], modality: str, backbone: str,
                   variant: str, indicator: str | None) -> float:
    """The AUROC of the variant's own scorer in its own runs (conflict cosine or matched loss), NaN without
    windows; ``windows``: each tree's :func:`cmgh.report.detection_over_training.per_seed`."""
    target = TARGET[modality]
    if indicator is None:
        return math.nan
    means = []
    for root, data in windows.items():
        setting = settings[root]
        if setting.rate == 0 or setting.modality != modality or data.empty or indicator not in data:
            continue
        data = data[(data["variant"] == variant) & (data["backbone"] == backbone) & (data["metric"] == "auroc") & (data["target"] == target)]
        means.extend(data.groupby("seed")[indicator].mean().dropna().tolist())
    return float(sum(means) / len(means)) if means else math.nan


def points(results: Sequence[primary.EndpointResult], trees: Mapping[str, Mapping[str, Any]], roots: Sequence[Path],
           settings: Mapping[Path, NoiseSetting]) -> dict[tuple[str, str], list[Point]]:
    """(endpoint name, backbone) -> the curriculum variants with a gain and a known AUROC, by AUROC.
    ``trees``: a variant's resolved tree config (the one of a world that ran it)."""
    out: dict[tuple[str, str], list[Point]] = {}
    windows = {Path(root): detection_over_training.per_seed(Path(root)) for root in roots if settings[Path(root)].rate > 0}
    for result in results:
        found = []
        for v in result.variants:
            curriculum = curriculum_of(trees[v.variant], v.variant) if v.variant in trees else {}
            rule, scorer = curriculum.get("rule", "none"), curriculum.get("scorer", "")
            if rule == "none" or v.gain is None:
                continue
            if scorer == "quality":
                auroc, measured = float(curriculum["quality_auroc"]), False
            elif scorer == "oracle":
                auroc, measured = ORACLE_AUROC, False
            else:
                auroc, measured = measured_auroc(windows, settings, result.endpoint.modality, result.backbone, v.variant,
                                                 indicator_of(curriculum)), True
            if math.isfinite(auroc):
                found.append(Point(v.variant, scorer, rule, auroc, measured, v.gain))
        if found:
            out[(result.endpoint.name, result.backbone)] = sorted(found, key=lambda p: (p.auroc, p.variant))
    return out


def section(curves: Mapping[tuple[str, str], list[Point]], results: Sequence[primary.EndpointResult]) -> str:
    """A table per endpoint and backbone: variant, scorer and rule, detector AUROC, pooled gain, share of the gap."""
    by_key = {(r.endpoint.name, r.backbone): r for r in results}
    parts = []
    for (name, backbone), found in curves.items():
        result = by_key[(name, backbone)]
        digits = result.endpoint.column.digits
        rows = [{
            "variant": f"`{p.variant}`",
            "scorer (rule)": f"{p.scorer or 'conflict'} ({p.rule})",
            "detector AUROC": f"{p.auroc:.3f}" + (" (measured)" if p.measured else " (set)"),
            "pooled gain": p.gain.format(digits),
            "share of the gap": primary.share(result, next(v for v in result.variants if v.variant == p.variant)),
        } for p in found]  # fmt: skip
        parts.append(f"**{name}**, {backbone}:\n\n" + to_markdown(pd.DataFrame(rows)).rstrip("\n"))
    return "\n\n".join(parts)


def figure(curves: Mapping[tuple[str, str], list[Point]], out: Path) -> list[Path]:
    """A panel per endpoint and backbone: gain [interval] against detector AUROC; the set-AUROC controls
    of one selection rule joined by a line, the measured scorers as open markers."""
    import matplotlib.pyplot as plt

    if not curves:
        return []
    fig, axes = plt.subplots(1, len(curves), figsize=(3.8 * len(curves), 3.2), squeeze=False)
    for ax, ((name, backbone), found) in zip(axes[0], curves.items(), strict=True):
        for i, rule in enumerate(sorted({p.rule for p in found})):
            set_points = [p for p in found if p.rule == rule and not p.measured]
            if set_points:
                ax.errorbar([p.auroc for p in set_points], [p.gain.mean for p in set_points],
                            yerr=_yerr(set_points), marker="o", capsize=3, color=f"C{i}", label=f"set AUROC ({rule})")
        for p in (p for p in found if p.measured):
            ax.errorbar([p.auroc], [p.gain.mean], yerr=_yerr([p]), marker="s", mfc="none", capsize=3, ls="none", color="k")
            ax.annotate(p.variant, (p.auroc, p.gain.mean), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.axhline(0, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{name} ({backbone})", fontsize=8)
        ax.set_xlabel("detector AUROC for the misaligned pairs")
        ax.set_xlim(0.45, 1.05)
    axes[0][0].set_ylabel("gain over the baseline")
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.suptitle(f"Benefit against detection quality (mean, {100 * stats.LEVEL:g} % interval over seeds)", y=1.02)
    fig.tight_layout()
    paths = savefig(fig, out, FIGURE)
    plt.close(fig)
    return paths


def _yerr(found: Sequence[Point]) -> list[list[float]]:
    return [[p.gain.mean - p.gain.low if math.isfinite(p.gain.low) else 0.0 for p in found],
            [p.gain.high - p.gain.mean if math.isfinite(p.gain.high) else 0.0 for p in found]]
