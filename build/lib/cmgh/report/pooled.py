"""A variant's gain over the baseline pooled over the worlds of one noise modality, and its slope
against the noise rate, with intervals over seeds.

Every world (noise modality × rate, one results tree) runs the same seeds, and a seed fixes the
initialization and the data order in every world, so the paired differences ``d[world, seed] =
variant - baseline`` of one seed are correlated across worlds while seeds are independent. Both
estimates are therefore computed per seed first and their spread is taken over seeds (a
cluster-robust analysis with the seed as cluster; Student's t at seeds - 1 degrees of freedom):

* the pooled gain: per seed, the mean of ``d`` over the noisy worlds of the modality (rate > 0:
  the gain where there is noise to handle); then the mean and t interval over seeds. With every
  world at every seed this is the variant coefficient of ``metric ~ world + variant`` fitted to
  the paired runs (world fixed effects cancel within a pair), with a seed-clustered interval;
* the slope: per seed, the least-squares slope of ``d`` against the rate over the modality's
  worlds *and* the clean one (rate 0 is a point of every curve); then the mean and t interval
  over seeds (equal to the pooled least-squares slope when every seed has every world).

A seed missing a world contributes the mean (or slope) of the worlds it has; a seed with no pair,
or with fewer than two rates for a slope, is left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cmgh import layout
from cmgh.worlds import NoiseSetting
from cmgh.report import stats
from cmgh.report.collect import collect, noise_setting_of

KEYS = ["modality", "noise_rate", "backbone", "variant", "seed"]


def seed_values(roots: Iterable[Path]) -> pd.DataFrame:
    """Every evaluation metric of every tree, one row per run: columns ``modality, noise_rate,
    backbone, variant, seed, task, metric, value``."""
    frames = []
    for root in roots:
        setting = noise_setting_of(Path(root))
        frames.append(collect(root).assign(modality=setting.modality, noise_rate=setting.rate))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*KEYS, "task", "metric", "value"])


def on_modality(values: pd.DataFrame, modality: str) -> pd.Series:
    """Which rows belong to ``modality``'s curve: its worlds and the clean one."""
    return pd.Series([NoiseSetting(m, r).on(modality) for m, r in zip(values["modality"], values["noise_rate"], strict=True)],
                     index=values.index, dtype=bool)


def differences(values: pd.DataFrame, backbone: str, task: str, metric: str, variant: str,
                reference: str = layout.BASELINE_VARIANT) -> pd.DataFrame:
    """``variant - reference`` per world and seed both ran (NaN values dropped): columns
    ``modality, noise_rate, seed, d``."""
    sel = values[(values.backbone == backbone) & (values.task == task) & (values.metric == metric)]
    by = ["modality", "noise_rate", "seed"]
    a = sel[sel.variant == variant].set_index(by)["value"]
    b = sel[sel.variant == reference].set_index(by)["value"]
    d = (a - b).dropna()
    return d.rename("d").reset_index()


@dataclass(frozen=True)
class Pooled:
    """A per-seed summary (pooled gain or slope) over seeds: mean, t interval at
    :data:`cmgh.report.stats.LEVEL`, two-sided p of the t-test, the seeds (``n``), the sd of the
    per-seed values, the worlds pooled, and ``positive``: for a gain, the worlds whose mean
    difference is positive; for a slope, the rises between consecutive rates' mean differences."""

    mean: float
    low: float
    high: float
    p: float
    n: int
    sd: float
    worlds: int
    positive: int
    per_seed: tuple[float, ...]

    def format(self, digits: int) -> str:
        """``−3.6 [−5.9, −1.3], p = 0.01, 5 seeds × 3 worlds``."""
        seeds = f"{self.n} seed{'s' if self.n != 1 else ''} × {self.worlds} world{'s' if self.worlds != 1 else ''}"
        if self.n < 2:
            return f"{stats.number(self.mean, digits, plus=True)}, {seeds}"
        return (f"{stats.number(self.mean, digits, plus=True)} [{stats.number(self.low, digits)}, {stats.number(self.high, digits)}], "
                f"{stats.p_text(self.p)}, {seeds}")


def summarize(per_seed: pd.Series, worlds: int, positive: int) -> Pooled:
    """Mean, t interval and t-test p over the per-seed values (NaN ends below two seeds)."""
    x = per_seed.dropna().to_numpy(dtype=float)
    mean, sd, low, high, n = stats.t_interval(x)
    if n < 2:
        p = math.nan
    elif sd <= 1e-12 * max(1.0, abs(mean)):
        p, low, high = (1.0 if mean == 0 else 0.0), mean, mean
    else:
        from scipy import stats as scipy_stats

        p = float(scipy_stats.ttest_1samp(x, 0.0).pvalue)
    return Pooled(mean, low, high, p, n, sd, worlds, positive, tuple(float(v) for v in x))


def pooled_gain(d: pd.DataFrame) -> Pooled | None:
    """The mean of :func:`differences` over the noisy worlds (rate > 0), by seed then over seeds;
    None without a noisy pair."""
    noisy = d[d.noise_rate > 0]
    if noisy.empty:
        return None
    per_world = noisy.groupby(["modality", "noise_rate"])["d"].mean()
    return summarize(noisy.groupby("seed")["d"].mean(), len(per_world), int((per_world > 0).sum()))


def _slope(x: Sequence[float], y: Sequence[float]) -> float:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(np.unique(x)) < 2:
        return math.nan
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc * xc).sum())


def slope(d: pd.DataFrame) -> Pooled | None:
    """The least-squares slope of :func:`differences` against the noise rate (clean world
    included), by seed then over seeds; None when no seed has two rates."""
    per_seed = d.groupby("seed").apply(lambda g: _slope(g["noise_rate"], g["d"]), include_groups=False)
    if per_seed.dropna().empty:
        return None
    per_world = d.groupby("noise_rate")["d"].mean()
    rising = int((np.diff(per_world.sort_index().to_numpy()) > 0).sum())
    return summarize(per_seed, len(per_world), rising)
