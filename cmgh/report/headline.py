"""The headline numbers: per backbone, task (its headline metric) and variant, the mean over seeds
with its 95 % interval and the difference with the baseline with its verdict, computed as the
summary computes them (:func:`cmgh.report.summary.compare_variants`, :func:`~cmgh.report.summary.verdict`),
so the report's front page, its figure and ``tables/summary.md`` cannot disagree."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from cmgh.layout import BASELINE_VARIANT, RANDOM_VARIANT
from cmgh.report import stats
from cmgh.report.collect import order_key, variant_order
from cmgh.report.columns import HEADLINE, Column
from cmgh.report.summary import compare_variants, seed_values, verdict

FLOOR = "random-init floor"
REFERENCE = "reference"


@dataclass(frozen=True, eq=False)  # eq=False: a Series field has no truth value
class Cell:
    """One variant on one task's headline metric: its seeds' values, their mean and the interval of
    the mean (:func:`cmgh.report.stats.interval`), and (for a compared variant) the paired
    difference with the baseline and its verdict."""

    backbone: str
    col: Column
    variant: str
    values: pd.Series  # by seed
    low: float
    high: float
    vs_baseline: stats.Comparison | None
    verdict: str  # "" for the baseline and random init
    best: bool = False  # the best mean of the pre-trained variants on this task

    @property
    def mean(self) -> float:
        return float(self.values.mean()) if len(self.values) else math.nan

    @property
    def n(self) -> int:
        return len(self.values)

    def mean_text(self) -> str:
        """``61.2 [55.0, 67.4]`` (the mean alone for a single seed)."""
        if not self.n:
            return "—"
        digits = self.col.digits
        if not (np.isfinite(self.low) and np.isfinite(self.high)):
            return stats.number(self.mean, digits)
        return f"{stats.number(self.mean, digits)} [{stats.number(self.low, digits)}, {stats.number(self.high, digits)}]"

    def difference_text(self) -> str:
        """The difference with the baseline as the summary prints it, or what the row is."""
        if self.variant == RANDOM_VARIANT:
            return FLOOR
        if self.variant == BASELINE_VARIANT:
            return REFERENCE
        return self.vs_baseline.format(self.col.digits) if self.vs_baseline is not None else "—"


def headline(long: pd.DataFrame, order: tuple[str, ...] | None = None) -> list[Cell]:
    """Every (backbone, headline task, variant) with values, backbones sorted, tasks in
    :data:`HEADLINE` order, variants in ``order`` (random init first, then the baseline)."""
    order = order if order is not None else variant_order(long.variant.unique())
    key = order_key(order)
    cells: list[Cell] = []
    for backbone in sorted(long.backbone.unique()):
        present = set(long[long.backbone == backbone].task)
        for task, col in HEADLINE.items():
            if task not in present:
                continue
            row: list[Cell] = []
            variants = sorted(set(long[(long.backbone == backbone) & (long.task == task)].variant), key=key)
            for variant in variants:
                values = seed_values(long, backbone, col, variant)
                if values.empty:
                    continue
                low, high, _ = stats.interval(values.to_numpy())
                comparison, judged = None, ""
                if variant not in (BASELINE_VARIANT, RANDOM_VARIANT):
                    comparison = compare_variants(long, backbone, col, variant, BASELINE_VARIANT)
                    judged = verdict(col, comparison) if comparison is not None else ""
                row.append(Cell(backbone, col, variant, values.sort_index(), low, high, comparison, judged))
            row = _mark_best(row, col)
            cells += row
    return cells


def _mark_best(row: list[Cell], col: Column) -> list[Cell]:
    """The best mean among the pre-trained variants (random init is the floor, not a contender)."""
    means = [c.mean for c in row if c.variant != RANDOM_VARIANT]
    if not means:
        return row
    best = min(means) if col.lower_is_better else max(means)
    return [replace(c, best=c.variant != RANDOM_VARIANT and math.isclose(c.mean, best, rel_tol=0, abs_tol=1e-12)) for c in row]


def panels(cells: list[Cell]) -> dict[tuple[str, str], list[Cell]]:
    """The cells by (backbone, task), in order: one panel of the figure, one block of the table."""
    out: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        out.setdefault((cell.backbone, cell.col.task), []).append(cell)
    return out
