"""Headroom: what the noise costs the baseline, so a method's gain can be read against what was
there to win. Per world (noise modality × rate) and task: the baseline's and the random-init
encoder's absolute metric with its interval over seeds, and the clean-vs-noisy gap of the baseline.

The gap is ``clean - noisy`` (``noisy - clean`` for a lower-is-better metric: positive = the noise
hurts). A seed fixes the initialization and the data order in every world, so when the clean and
the noisy world ran common seeds the gap is paired by seed (:func:`cmgh.report.stats.paired`:
interval and test must agree); without two common seeds it is Welch's two-sample t comparison.

The "no headroom" rule: a task × modality cell has headroom when its gap at the modality's largest
rate is resolved and positive (the strongest noise of the curve; a noise that does not hurt there
is taken not to hurt at the milder rates). A cell without headroom cannot reward any noise
handling: it is marked "no headroom: no method can win here" and left out of the method
comparisons of the primary analysis and of their multiple-testing family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from cmgh import layout
from cmgh.worlds import MODALITIES
from cmgh.report import stats
from cmgh.report.columns import Column
from cmgh.report.tables import to_markdown

NO_HEADROOM = "no headroom: no method can win here"
PAIRED, WELCH = "paired by seed", "Welch (no common seeds)"


@dataclass(frozen=True)
class Gap:
    """The clean-vs-noisy gap of the baseline at one world: mean [low, high], p, n and how computed."""

    mean: float
    low: float
    high: float
    p: float
    n: int
    how: str
    rate: float

    @property
    def resolved(self) -> bool:
        """The noise hurts: the interval lies above 0 and p < 1 - level."""
        return self.n > 1 and self.low > 0 and self.p < 1.0 - stats.LEVEL

    def format(self, digits: int) -> str:
        return (f"{stats.number(self.mean, digits, plus=True)} [{stats.number(self.low, digits)}, {stats.number(self.high, digits)}], "
                f"{stats.p_text(self.p)}, n = {self.n}, {self.how}")


def _by_seed(values: pd.DataFrame, backbone: str, col: Column, variant: str, modality: str, rate: float) -> pd.Series:
    sel = values[(values.backbone == backbone) & (values.task == col.task) & (values.metric == col.metric) & (values.variant == variant)
                 & (values.noise_rate == rate) & ((values.modality == modality) if rate > 0 else True)]
    return sel.groupby("seed")["value"].mean().dropna()


def gap(values: pd.DataFrame, backbone: str, col: Column, modality: str, rate: float) -> Gap | None:
    """The baseline's gap between the clean world and ``modality`` at ``rate``; None without runs of both."""
    clean = _by_seed(values, backbone, col, layout.BASELINE_VARIANT, modality, 0.0)
    noisy = _by_seed(values, backbone, col, layout.BASELINE_VARIANT, modality, rate)
    if clean.empty or noisy.empty:
        return None
    sign = -1.0 if col.lower_is_better else 1.0
    if len(clean.index.intersection(noisy.index)) >= 2:
        c = stats.paired(sign * clean, sign * noisy)
        return Gap(c.mean, c.low, c.high, c.p, c.n, PAIRED, rate) if c is not None else None
    if len(clean) < 2 or len(noisy) < 2:
        return Gap(sign * (clean.mean() - noisy.mean()), math.nan, math.nan, math.nan, min(len(clean), len(noisy)), WELCH, rate)
    from scipy import stats as scipy_stats

    test = scipy_stats.ttest_ind(sign * clean.to_numpy(), sign * noisy.to_numpy(), equal_var=False)
    ci = test.confidence_interval(stats.LEVEL)
    return Gap(float(sign * (clean.mean() - noisy.mean())), float(ci.low), float(ci.high), float(test.pvalue),
               min(len(clean), len(noisy)), WELCH, rate)


def rates(values: pd.DataFrame, modality: str) -> list[float]:
    """The noisy rates of ``modality``'s worlds, ascending."""
    return sorted(float(r) for r in values.loc[(values.modality == modality) & (values.noise_rate > 0), "noise_rate"].unique())


def modalities(values: pd.DataFrame) -> list[str]:
    """The noise modalities with a noisy world, in :data:`cmgh.worlds.MODALITIES` order."""
    noisy = set(values.loc[values.noise_rate > 0, "modality"])
    return [m for m in MODALITIES if m in noisy]


def cell_gap(values: pd.DataFrame, backbone: str, col: Column, modality: str) -> Gap | None:
    """The gap that decides a task × modality cell's headroom: at the modality's largest rate."""
    found = rates(values, modality)
    return gap(values, backbone, col, modality, found[-1]) if found else None


def has_headroom(values: pd.DataFrame, backbone: str, col: Column, modality: str) -> bool:
    g = cell_gap(values, backbone, col, modality)
    return g is not None and g.resolved


def _absolute(series: pd.Series, digits: int) -> str:
    mean, _, low, high, n = stats.t_interval(series.to_numpy())
    if n == 0:
        return "—"
    if n < 2:
        return f"{stats.number(mean, digits)} (n = 1)"
    return f"{stats.number(mean, digits)} [{stats.number(low, digits)}, {stats.number(high, digits)}]"


def table(values: pd.DataFrame, backbone: str, col: Column, modality: str) -> str:
    """Rows random init, baseline and the gap; a column per world of ``modality`` (clean first):
    mean [t interval over seeds]."""
    worlds = [0.0, *rates(values, modality)]
    rows = []
    for variant, name in ((layout.RANDOM_VARIANT, "random init"), (layout.BASELINE_VARIANT, layout.BASELINE_VARIANT)):
        rows.append({"": name, **{_world(modality, r): _absolute(_by_seed(values, backbone, col, variant, modality, r), col.digits) for r in worlds}})
    gaps = {_world(modality, r): gap(values, backbone, col, modality, r) for r in worlds[1:]}
    rows.append({"": "gap (clean − noisy)", _world(modality, 0.0): "",
                 **{k: (g.format(col.digits) + (" **resolved**" if g.resolved else "")) if g else "—" for k, g in gaps.items()}})
    return to_markdown(pd.DataFrame(rows)).rstrip("\n")


def _world(modality: str, rate: float) -> str:
    return "clean" if rate == 0 else f"{modality} {rate:g}"
