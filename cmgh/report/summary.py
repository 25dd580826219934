"""The generated summary: per backbone, each variant against the baseline and pre-training
against random init, judged against the spread over seeds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cmgh.layout import BASELINE_VARIANT, RANDOM_VARIANT
from cmgh.report.collect import comparisons, variant_order
from cmgh.report.columns import HEADLINE, Column


def seed_values(long: pd.DataFrame, backbone: str, col: Column, variant: str) -> pd.Series:
    """One variant's values of a column, indexed by seed (missing values dropped): what every
    comparison pairs by seed."""
    sel = long[(long.backbone == backbone) & (long.task == col.task) & (long.metric == col.metric) & (long.variant == variant)]
    return sel.set_index("seed")["value"].dropna()


def _paired(long: pd.DataFrame, backbone: str, col: Column, a: str, b: str) -> tuple[float, float, int] | None:
    """Mean and std over seeds of (a - b), paired by seed when both ran it, else unpaired (pooled std)."""
    va, vb = seed_values(long, backbone, col, a), seed_values(long, backbone, col, b)
    if va.empty or vb.empty:
        return None
    common = va.index.intersection(vb.index)
    if len(common):
        diff = va.loc[common] - vb.loc[common]
        return float(diff.mean()), float(diff.std()) if len(diff) > 1 else math.nan, len(diff)
    std = math.sqrt(float(va.var() if len(va) > 1 else np.nan) + float(vb.var() if len(vb) > 1 else np.nan))
    return float(va.mean() - vb.mean()), std, min(len(va), len(vb))


def _verdict(col: Column, stats: tuple[float, float, int]) -> str:
    mean, std, n = stats
    sign = -1.0 if col.lower_is_better else 1.0
    text = f"{mean:+.{col.digits}f} ± {std:.{col.digits}f}" if np.isfinite(std) else f"{mean:+.{col.digits}f}"
    text += f" {col.label} (n={n})"
    if not np.isfinite(std):
        return text + ", a single seed: no spread to judge by"
    if abs(mean) < std or mean == 0:
        return text + ", within noise"
    return text + (", better" if sign * mean > 0 else ", worse")


def summary(long: pd.DataFrame, order: tuple[str, ...] | None = None) -> str:
    """Markdown: per backbone, one paragraph generated from the numbers.

    Every variant found other than the baseline and ``random`` is compared with the baseline, in
    ``order`` (see :func:`cmgh.report.collect.variant_order`; default: alphabetical)."""
    order = order if order is not None else variant_order(long.variant.unique())
    parts = ["# Summary", "", "Differences are paired by seed: mean ± std over seeds of (variant − reference); "
             "a difference smaller than its std is called *within noise*.", ""]
    for backbone in sorted(long.backbone.unique()):
        variants = set(long[long.backbone == backbone].variant)
        sentences = []
        tasks = [t for t in HEADLINE if t in set(long[long.backbone == backbone].task)]
        if BASELINE_VARIANT in variants:
            for comp in comparisons(order):
                if comp not in variants:
                    continue
                claims = [_verdict(HEADLINE[t], s) for t in tasks if (s := _paired(long, backbone, HEADLINE[t], comp, BASELINE_VARIANT))]
                if claims:
                    sentences.append(f"**{comp}** vs {BASELINE_VARIANT}: " + "; ".join(claims) + ".")
            if RANDOM_VARIANT in variants:
                sentences += _pretraining_sentence(long, backbone, tasks)
        else:
            sentences.append(f"No {BASELINE_VARIANT} variant was evaluated, so no component can be compared.")
        parts += [f"## Backbone `{backbone}`", "", " ".join(sentences) if sentences else "Nothing to compare.", ""]
    return "\n".join(parts)


def _pretraining_sentence(long: pd.DataFrame, backbone: str, tasks: list[str]) -> list[str]:
    claims = []
    for t in tasks:
        if t == "noise":
            continue
        s = _paired(long, backbone, HEADLINE[t], BASELINE_VARIANT, RANDOM_VARIANT)
        if s:
            claims.append(_verdict(HEADLINE[t], s))
    if not claims:
        return []
    verdicts = [c.rsplit(", ", 1)[-1] for c in claims]
    overall = "beat random init on every downstream task" if all(v == "better" for v in verdicts) else "did not clearly beat random init on every downstream task"
    return [f"**Pre-training** ({BASELINE_VARIANT} vs random init) {overall}: " + "; ".join(claims) + "."]
