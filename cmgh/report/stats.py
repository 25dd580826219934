"""Paired comparisons over seeds: whether the seeds run resolve a difference, and how many would.

A seed is the replicate of this project (it fixes initialization, data order and augmentation),
so two variants, or two indicators, are compared on the differences of the seeds both ran:

* the interval: the BCa bootstrap interval of the mean difference (:data:`RESAMPLES` resamples
  from a fixed generator, so a report reads the same every time it is built). With 2 seeds the
  bootstrap is degenerate (its resample means are d1, d2 and their mean: the interval is about
  [d1, d2]), so the Student-t interval is used there;
* the test: the paired t-test; the Wilcoxon signed-rank test once there are enough non-zero
  differences for it to reach p < 1 - level at all (:func:`wilcoxon_min`: 6 at 95 %; with 2 its
  smallest p is 0.5);
* the verdict (:attr:`Comparison.resolved`): the interval excludes 0 *and* p < 1 - level. With 3-5
  seeds the bootstrap interval covers about 80 % where it claims 95 % (the resamples never leave the
  observed range), so the test must agree before a difference is called one;
* :func:`seeds_needed`: the smallest n whose t interval half-width ``t_{n-1} s / sqrt(n)`` is below
  |mean|, at the observed mean and spread.

Differences all equal (ties of every seed, zeros included) have no spread to test: p = 1, interval
[d, d], no seeds-needed figure.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

LEVEL = 0.95  # coverage of every interval of the report
RESAMPLES = 9999
BOOTSTRAP_SEED = 0
T_TEST, WILCOXON = "t-test", "Wilcoxon signed-rank"
T_INTERVAL, BOOTSTRAP = "t", "bootstrap"
MINUS = "\u2212"


def _t(level: float, dof: float) -> float:
    from scipy import stats  # imported on first use, as everywhere here: scipy.stats is slow to import

    return float(stats.t.ppf(0.5 + level / 2.0, dof))


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float, float, int]:
    """Mean, std and the two ends of the two-sided Student-t interval of the mean at ``level``
    (ends NaN below two values: one seed has no spread)."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan, n
    std = float(x.std(ddof=1))
    half = _t(level, n - 1) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half, n


def _all_equal(x: np.ndarray) -> bool:
    """Equal up to float noise (differences of rounded metrics, e.g. 0.1 + 0.2 and 0.3, are one value)."""
    return float(np.ptp(x)) <= 1e-9 * max(1.0, float(np.abs(x).max()))


def interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, str]:
    """Low, high and method of the interval of the mean of ``values``: bootstrap (BCa) from 3
    values, the t interval with 2, [v, v] when all are equal, NaN ends for a single value."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan, ""
    if _all_equal(x):
        return float(x.mean()), float(x.mean()), T_INTERVAL if len(x) == 2 else BOOTSTRAP
    if len(x) == 2:
        _, _, low, high, _ = t_interval(x, level)
        return low, high, T_INTERVAL
    from scipy import stats

    for method in ("BCa", "percentile"):  # BCa is undefined when no resample falls on one side of the mean
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            ci = stats.bootstrap((x,), np.mean, n_resamples=RESAMPLES, confidence_level=level, method=method,
                                 random_state=BOOTSTRAP_SEED).confidence_interval
        if np.isfinite(ci.low) and np.isfinite(ci.high):
            break
    return float(ci.low), float(ci.high), BOOTSTRAP


def wilcoxon_min(level: float = LEVEL) -> int:
    """The fewest non-zero differences at which the signed-rank test can reach p < 1 - level
    (its smallest two-sided p is 2 / 2^m: every difference of one sign)."""
    return math.floor(math.log2(2.0 / (1.0 - level))) + 1


def p_value(differences: Sequence[float], level: float = LEVEL) -> tuple[float, str]:
    """Two-sided p of "the mean difference is 0" and the test used (:func:`wilcoxon_min`); 1 when
    the differences are all equal (no spread to test), NaN for a single one."""
    d = np.asarray(differences, dtype=float)
    if len(d) < 2:
        return math.nan, ""
    from scipy import stats

    test = WILCOXON if np.count_nonzero(d) >= wilcoxon_min(level) else T_TEST
    if _all_equal(d):
        return 1.0, test
    if test == WILCOXON:  # zeros dropped (Wilcoxon's rule); with ties or zeros scipy permutes exactly up to 13 values
        return float(stats.wilcoxon(d).pvalue), test
    return float(stats.ttest_1samp(d, 0.0).pvalue), test


def half_width(n: int, level: float = LEVEL) -> float:
    """The t interval's half-width for n values, in standard deviations: ``t_{n-1} / sqrt(n)``."""
    return _t(level, n - 1) / math.sqrt(n)


def seeds_needed(mean: float, std: float, level: float = LEVEL) -> int | None:
    """The smallest n >= 2 whose t interval at ``level``, ``mean ± t_{n-1} std / sqrt(n)``,
    excludes 0; None when the mean is 0 or the spread is 0 or unknown (nothing to resolve)."""
    if not (np.isfinite(mean) and np.isfinite(std)) or mean == 0 or std <= 0:
        return None
    ratio = std / abs(mean)
    # t_{n-1} > z for every n, so no n <= (z s / |mean|)^2 can do: start the search there.
    n = max(2, math.floor((_t(level, math.inf) * ratio) ** 2))
    while half_width(n, level) * ratio >= 1.0:
        n += 1
    return n


@dataclass(frozen=True)
class Comparison:
    """A paired comparison: the differences' mean, std and interval (``low``, ``high``, by
    ``interval``), the test's ``p`` (by ``test``), the ``n`` pairs and :func:`seeds_needed`."""

    mean: float
    std: float
    low: float
    high: float
    p: float
    n: int
    test: str
    interval: str
    seeds_needed: int | None
    level: float = LEVEL

    @property
    def resolved(self) -> bool:
        """The interval excludes 0 and the test agrees (p < 1 - level)."""
        return self.n > 1 and (self.low > 0 or self.high < 0) and self.p < 1.0 - self.level

    @property
    def sign(self) -> int:
        """+1 or -1 when resolved (the side of 0 the interval lies on), else 0."""
        return (1 if self.low > 0 else -1) if self.resolved else 0

    @property
    def identical(self) -> bool:
        """Two or more differences, all equal: no spread, so no interval and no test."""
        return self.n > 1 and self.std == 0

    def format(self, digits: int) -> str:
        """``+2.1 [−0.4, 4.6], p = 0.09, n = 5`` (``+7.6, n = 1`` for a single pair; ``+4.7, identical across
        seeds; no test at n = 2`` when every difference is the same)."""
        if self.n < 2:
            return f"{number(self.mean, digits, plus=True)}, n = {self.n}"
        if self.identical:
            return f"{number(self.mean, digits, plus=True)}, identical across seeds; no test at n = {self.n}"
        return (f"{number(self.mean, digits, plus=True)} [{number(self.low, digits)}, {number(self.high, digits)}], "
                f"{p_text(self.p)}, n = {self.n}")


def compare(differences: Sequence[float], level: float = LEVEL) -> Comparison:
    """The comparison of paired differences (at least one)."""
    d = np.asarray(differences, dtype=float)
    if len(d) == 0:
        raise ValueError("compare: no differences")
    mean = float(d.mean())
    std = 0.0 if len(d) > 1 and _all_equal(d) else float(d.std(ddof=1)) if len(d) > 1 else math.nan
    low, high, method = interval(d, level)
    p, test = p_value(d, level)
    return Comparison(mean, std, low, high, p, len(d), test, method, seeds_needed(mean, std, level), level)


def paired(a: pd.Series, b: pd.Series, level: float = LEVEL) -> Comparison | None:
    """``a - b`` paired on the index (a seed, or seed and window), missing values dropped; None
    when no index holds both."""
    d = (a - b).dropna()
    return compare(d.to_numpy(), level) if len(d) else None


def false_discovery(p: pd.Series) -> pd.Series:
    """Benjamini-Hochberg adjusted p over every comparison of a family (NaN where p is): a page
    that makes dozens of comparisons gets some p < 0.05 from chance alone."""
    from scipy import stats

    out = pd.Series(float("nan"), index=p.index)
    finite = p.dropna()
    if len(finite):
        out[finite.index] = stats.false_discovery_control(finite.to_numpy(), method="bh")
    return out


# --------------------------------------------------------------------------- printing


def number(x: float, digits: int, plus: bool = False) -> str:
    """``x`` at ``digits`` with a typographic minus (``+`` for positive numbers when ``plus``); a
    value that rounds to 0 prints unsigned."""
    text = f"{x:.{digits}f}"
    if float(text) == 0:
        return f"{0:.{digits}f}"
    return (f"+{text}" if plus and x > 0 else text).replace("-", MINUS)


def p_text(p: float) -> str:
    """``p = 0.09``: two decimals, three below 0.01, ``p < 0.001`` below that."""
    if not np.isfinite(p):
        return "p = —"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def seeds_text(n: int | None) -> str:
    """:func:`seeds_needed` for print: ``—`` when there is nothing to resolve."""
    return "—" if n is None else f"{n:,}".replace(",", " ")
