"""The generated summary: per backbone, each variant against the baseline and pre-training
against random init, each difference paired by seed and called only when the seeds resolve it
(:mod:`cmgh.report.stats`)."""

from __future__ import annotations

import pandas as pd

from cmgh.layout import BASELINE_VARIANT, RANDOM_VARIANT
from cmgh.report import stats
from cmgh.report.collect import comparisons, variant_order
from cmgh.report.columns import HEADLINE, Column

SINGLE_SEED = "a single seed: no spread to judge by"
NO_COMMON_SEED = "no seed evaluated for both, nothing to pair"


def seed_values(long: pd.DataFrame, backbone: str, col: Column, variant: str) -> pd.Series:
    """One variant's values of a column, indexed by seed (missing values dropped): what every
    comparison pairs by seed."""
    sel = long[(long.backbone == backbone) & (long.task == col.task) & (long.metric == col.metric) & (long.variant == variant)]
    return sel.set_index("seed")["value"].dropna()


def compare_variants(long: pd.DataFrame, backbone: str, col: Column, a: str, b: str) -> stats.Comparison | None:
    """``a - b`` on a column, paired by seed; None unless a seed has a value of both."""
    return stats.paired(seed_values(long, backbone, col, a), seed_values(long, backbone, col, b))


def verdict(col: Column, c: stats.Comparison) -> str:
    """``better``/``worse`` when the seeds resolve the difference (the sign flipped for
    lower-is-better columns), else ``not resolved`` with the seeds that would resolve it."""
    if c.n < 2:
        return SINGLE_SEED
    if c.identical:
        return "not tested (more seeds, or a finer metric, give it a spread)"
    if c.resolved:
        return "better" if c.sign * (-1 if col.lower_is_better else 1) > 0 else "worse"
    return f"not resolved (seeds needed: {stats.seeds_text(c.seeds_needed)})"


def claim(col: Column, c: stats.Comparison) -> str:
    """``Kinetics top-1 +2.1 [−0.4, 4.6], p = 0.09, n = 5, not resolved (seeds needed: 9)``."""
    return f"{col.label} {c.format(col.digits)}, {verdict(col, c)}"


def header(level: float = stats.LEVEL) -> str:
    """What every claim's numbers are, and what two seeds can resolve."""
    pct, alpha = f"{100 * level:g} %", f"{1 - level:.2g}"
    two = stats.half_width(2, level)
    return (
        f"Each claim pairs a variant with its reference by seed (the seeds both ran) and reads: the mean difference "
        f"(variant − reference) [its {pct} interval: bootstrap (BCa, {stats.RESAMPLES} resamples, fixed seed), or with 2 seeds, "
        f"where the bootstrap is degenerate, Student's t], the p-value of a paired test (t-test; the Wilcoxon signed-rank test "
        f"from {stats.wilcoxon_min(level)} non-zero differences, the fewest at which it can reach p < {alpha}), and n, the seeds. "
        f"A difference is called better or worse only when its interval excludes 0 and p < {alpha} (with 3–5 seeds the bootstrap "
        f"interval is narrower than {pct}, so the test must agree); otherwise it is *not resolved*, and *seeds needed* is the "
        f"smallest n whose t interval excludes 0 at the observed mean and spread (— for a zero mean or spread). Two seeds "
        f"resolve only large effects: their {pct} t interval reaches {two:.1f} standard deviations of the differences either side of the mean."
    )


def summary(long: pd.DataFrame, order: tuple[str, ...] | None = None) -> str:
    """Markdown: per backbone, one paragraph generated from the numbers.

    Every variant found other than the baseline and ``random`` is compared with the baseline, in
    ``order`` (see :func:`cmgh.report.collect.variant_order`; default: alphabetical)."""
    order = order if order is not None else variant_order(long.variant.unique())
    parts = ["# Summary", "", header(), ""]
    for backbone in sorted(long.backbone.unique()):
        variants = set(long[long.backbone == backbone].variant)
        sentences = []
        tasks = [t for t in HEADLINE if t in set(long[long.backbone == backbone].task)]
        if BASELINE_VARIANT in variants:
            for comp in comparisons(order):
                if comp not in variants:
                    continue
                claims = _claims(long, backbone, tasks, comp, BASELINE_VARIANT)
                if claims:
                    sentences.append(f"**{comp}** vs {BASELINE_VARIANT}: " + "; ".join(text for text, _ in claims) + ".")
            if RANDOM_VARIANT in variants:
                sentences += _pretraining_sentence(long, backbone, tasks)
        else:
            sentences.append(f"No {BASELINE_VARIANT} variant was evaluated, so no component can be compared.")
        parts += [f"## Backbone `{backbone}`", "", " ".join(sentences) if sentences else "Nothing to compare.", ""]
    return "\n".join(parts)


def _claims(long: pd.DataFrame, backbone: str, tasks: list[str], a: str, b: str) -> list[tuple[str, str]]:
    """(claim, verdict) per task both variants have values of; values on no common seed cannot be paired."""
    out = []
    for task in tasks:
        col = HEADLINE[task]
        c = compare_variants(long, backbone, col, a, b)
        if c is not None:
            out.append((claim(col, c), verdict(col, c)))
        elif not (seed_values(long, backbone, col, a).empty or seed_values(long, backbone, col, b).empty):
            out.append((f"{col.label}: {NO_COMMON_SEED}", NO_COMMON_SEED))
    return out


def _pretraining_sentence(long: pd.DataFrame, backbone: str, tasks: list[str]) -> list[str]:
    claims = _claims(long, backbone, [t for t in tasks if t != "noise"], BASELINE_VARIANT, RANDOM_VARIANT)
    if not claims:
        return []
    beat = all(v == "better" for _, v in claims)
    overall = "beat random init on every downstream task" if beat else "did not clearly beat random init on every downstream task"
    return [f"**Pre-training** ({BASELINE_VARIANT} vs random init) {overall}: " + "; ".join(text for text, _ in claims) + "."]
