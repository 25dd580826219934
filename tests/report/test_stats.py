"""Paired comparisons over seeds (cmgh.report.stats) against hand-computed cases, and the wording
they give the summary, the noise-gain table and the noise-over-training table."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from cmgh import layout
from cmgh.report import detection_over_training, stats
from cmgh.report.columns import Column
from cmgh.report.gain_vs_noise import figure_noise_gain, gain_vs_noise
from cmgh.report.summary import compare_variants, summary, verdict
from tests.report.fake_results import fake_results

TOP1 = Column("kinetics", "top1", "Kinetics top-1")
MEDR = Column("msrvtt", "t2v_MedR", "MSR-VTT MedR", lower_is_better=True)


def t975_1dof() -> float:
    """Student t's 97.5 % quantile at 1 dof (Cauchy: tan(0.475 pi) = 12.706)."""
    return math.tan(math.pi * 0.475)


# --------------------------------------------------------------------------- the test and the interval


def test_two_seeds_use_the_t_test_and_the_t_interval() -> None:
    c = stats.compare([1.0, 3.0])  # mean 2, std sqrt(2): the t interval is 2 ± t_1 sqrt(2) / sqrt(2)
    assert (c.mean, c.std, c.n) == pytest.approx((2.0, math.sqrt(2.0), 2))
    assert (c.low, c.high) == pytest.approx((2.0 - t975_1dof(), 2.0 + t975_1dof()), rel=1e-9)
    # t = 2 / (sqrt(2) / sqrt(2)) = 2 at 1 dof: P(|T| > 2) = 1 - 2 atan(2) / pi
    assert c.p == pytest.approx(1.0 - 2.0 * math.atan(2.0) / math.pi, rel=1e-9)
    assert (c.test, c.interval) == (stats.T_TEST, stats.T_INTERVAL)
    assert not c.resolved and c.seeds_needed == 5
    # the signed-rank test's smallest two-sided p with m differences is 2 / 2^m: 0.5 at 2, below 0.05 from 6
    assert stats.wilcoxon_min() == 6 and 2 / 2**5 > 0.05 > 2 / 2**6


def test_ties_three_seeds_bootstrap_interval_and_t_test() -> None:
    c = stats.compare([1.0, 1.0, 2.0])
    # t = (4/3) / (sqrt(1/3) / sqrt(3)) = 4 at 2 dof: P(|T| > t) = 1 - t / sqrt(2 + t^2) = 1 - 4 / sqrt(18)
    assert c.p == pytest.approx(1.0 - 4.0 / math.sqrt(18.0), rel=1e-9) and c.test == stats.T_TEST
    # Exact bootstrap: the resample mean is 1, 4/3, 5/3, 2 with probability 8, 12, 6, 1 (/27). BCa: z0 =
    # Phi^-1((8/27 + 20/27) / 2) = 0.046, acceleration 0.068 from the jackknife means 1.5, 1.5, 1, so the
    # ends are the 5.0 % and 99.1 % points of that distribution: 1 and 2.
    assert (c.low, c.high, c.interval) == (1.0, 2.0, stats.BOOTSTRAP)
    assert stats.compare([1.0, 1.0, 2.0]) == c  # a fixed generator: the same interval every time
    assert not c.resolved and c.seeds_needed == 4  # s/|m| = 0.433: n = 3: 4.303 * 0.433 / 1.732 = 1.08; n = 4: 3.182 * 0.433 / 2 = 0.69


@pytest.mark.parametrize("d", [[0.0, 0.0, 0.0], [1.5, 1.5, 1.5], [0.1 + 0.2, 0.3, 0.3], [2.0, 2.0], [0.0] * 7])
def test_all_equal_differences_have_p_one_and_a_point_interval(d: list[float]) -> None:
    c = stats.compare(d)
    assert c.p == 1.0 and c.low == pytest.approx(d[0]) and c.high == pytest.approx(d[0]) and c.std == 0.0
    assert c.seeds_needed is None and not c.resolved


def test_signed_rank_from_six_non_zero_differences_zeros_dropped() -> None:
    assert stats.compare([1, 2, 3, 4, 5, 6]).p == pytest.approx(2 / 2**6)  # all of one sign
    c = stats.compare([0, 1, 2, 3, 4, 5, 6])  # the zero dropped: 6 left, all positive
    assert (c.test, c.p, c.n) == (stats.WILCOXON, pytest.approx(2 / 2**6), 7) and c.resolved
    # W- = 7 (the rank of -7); subsets of 1..7 summing to <= 7: 1+1+1+2+2+3+4+5 = 19 of 128, twice
    assert stats.compare([1, 2, 3, 4, 5, 6, -7]).p == pytest.approx(38 / 128)
    assert stats.compare([0, 0, 1, 2, 3, 4, 5]).test == stats.T_TEST  # 5 non-zero: the signed-rank test cannot reach 0.05


def test_seeds_needed_by_hand() -> None:
    # mean 1, std 1: n = 6: t_5 / sqrt(6) = 2.571 / 2.449 = 1.050 >= 1; n = 7: t_6 / sqrt(7) = 2.447 / 2.646 = 0.925
    assert stats.seeds_needed(1.0, 1.0) == 7 and stats.seeds_needed(-1.0, 1.0) == 7
    # mean 2, std sqrt(2): t_3 / 2 = 1.591, t_4 / sqrt(5) = 1.242 against |mean| / std = 1.414
    assert stats.seeds_needed(2.0, math.sqrt(2.0)) == 5
    assert stats.seeds_needed(10.0, 0.1) == 2  # a large effect: two seeds do
    assert stats.seeds_needed(0.0, 1.0) is None and stats.seeds_needed(1.0, 0.0) is None and stats.seeds_needed(1.0, math.nan) is None
    assert stats.seeds_text(None) == "—" and stats.seeds_text(12345) == "12 345"
    assert stats.half_width(2) == pytest.approx(t975_1dof() / math.sqrt(2.0))


def test_paired_on_the_index_drops_missing_values() -> None:
    a = pd.Series({0: 1.0, 1: 3.0, 2: math.nan})
    b = pd.Series({0: 0.0, 1: 0.0, 3: 5.0})
    c = stats.paired(a, b)
    assert c is not None and (c.n, c.mean) == (2, 2.0)
    assert stats.paired(pd.Series({0: 1.0}), pd.Series({1: 1.0})) is None
    single = stats.paired(pd.Series({0: 8.0}), pd.Series({0: 0.4}))
    assert single is not None and single.n == 1 and math.isnan(single.p) and not single.resolved


def test_format() -> None:
    c = stats.Comparison(mean=2.1, std=2.0, low=-0.4, high=4.6, p=0.09, n=5, test=stats.T_TEST, interval=stats.BOOTSTRAP, seeds_needed=9)
    assert c.format(1) == "+2.1 [−0.4, 4.6], p = 0.09, n = 5"
    assert stats.compare([-2.0, -2.1, -1.9]).format(2) == "−2.00 [−2.10, −1.90], p < 0.001, n = 3"
    assert stats.compare([7.6]).format(1) == "+7.6, n = 1"
    assert stats.p_text(0.004) == "p = 0.004" and stats.number(-0.01, 1) == "0.0" and stats.number(0.04, 1, plus=True) == "0.0"


# --------------------------------------------------------------------------- verdicts


def test_verdict_needs_the_interval_clear_of_zero_and_flips_for_lower_is_better() -> None:
    lower = stats.compare([-2.0, -2.1, -1.9])
    assert verdict(MEDR, lower) == "better" and verdict(TOP1, lower) == "worse"
    higher = stats.compare([2.0, 2.1, 1.9])
    assert verdict(MEDR, higher) == "worse" and verdict(TOP1, higher) == "better"
    # two seeds resolve a large effect: 10.1 ± 12.7 * 0.1 (t = 101 at 1 dof, p = 1 - 2 atan(101) / pi)
    large = stats.compare([10.0, 10.2])
    assert large.p == pytest.approx(1 - 2 * math.atan(101.0) / math.pi, rel=1e-6) and verdict(TOP1, large) == "better"
    # never "worse" while the interval contains 0
    for c in (stats.compare([-1.0, -3.0]), stats.compare([-1.0, 1.0, -2.0])):
        assert c.low < 0 < c.high and verdict(TOP1, c).startswith("not resolved") and verdict(MEDR, c).startswith("not resolved")
    assert verdict(TOP1, stats.compare([-1.0, -3.0])) == "not resolved (seeds needed: 5)"
    assert verdict(TOP1, stats.compare([-1.0, 1.0])) == "not resolved (seeds needed: —)"  # mean 0
    assert verdict(TOP1, stats.compare([4.0])) == "a single seed: no spread to judge by"
    tied = stats.compare([4.7, 4.7])  # two seeds whose differences are equal: no interval, no test to print
    assert tied.format(1) == "+4.7, identical across seeds; no test at n = 2"
    assert verdict(TOP1, tied) == "not tested (more seeds, or a finer metric, give it a spread)" and not tied.resolved


def test_an_interval_clear_of_zero_is_not_enough_when_the_test_disagrees() -> None:
    # 3 seeds: the bootstrap interval spans about the observed range (it covers ~80 %, not 95 %)
    c = stats.compare([1.0, 4.0, 17.0])
    assert c.low > 0 and c.p > 0.05 and not c.resolved and verdict(TOP1, c).startswith("not resolved")


def _long(values: dict[tuple[str, int], float], task: str = "kinetics", metric: str = "top1") -> pd.DataFrame:
    return pd.DataFrame([{"task": task, "backbone": "ms", "variant": v, "seed": s, "metric": metric, "value": x}
                         for (v, s), x in values.items()])


def test_summary_wording() -> None:
    base = {0: 50.0, 1: 52.0, 2: 51.0}
    values = {("baseline", s): x for s, x in base.items()}
    values |= {("random", s): x - 30 + 0.1 * s for s, x in base.items()}  # +30, +29.9, +29.8: resolved
    values |= {("gr", s): x + d for (s, x), d in zip(base.items(), (2.0, 2.1, 1.9), strict=True)}
    values |= {("gcl", s): x + d for (s, x), d in zip(base.items(), (1.0, -1.0, 2.0), strict=True)}
    values |= {("gr_gcl", 0): 55.0, ("pcgrad", 7): 60.0, ("pcgrad", 8): 61.0}
    text = summary(_long(values))
    assert "paired" in text and "by seed" in text and "95 % interval" in text and "t-test" in text and "Wilcoxon" in text
    assert "Two seeds resolve only large effects" in text and "9.0 standard deviations" in text
    assert "within noise" not in text
    assert "**gr** vs baseline: Kinetics top-1 +2.0 [1.9, 2.1], p < 0.001, n = 3, better." in text
    gcl = compare_variants(_long(values), "ms", TOP1, "gcl", "baseline")
    assert gcl is not None and gcl.low < 0 < gcl.high
    assert f"**gcl** vs baseline: Kinetics top-1 +0.7 [−1.0, 1.7], p = 0.53, n = 3, not resolved (seeds needed: {gcl.seeds_needed})." in text
    assert "**gr_gcl** vs baseline: Kinetics top-1 +5.0, n = 1, a single seed: no spread to judge by." in text
    assert "**pcgrad** vs baseline: Kinetics top-1: no seed evaluated for both, nothing to pair." in text
    assert "**Pre-training** (baseline vs random init) beat random init on every downstream task: Kinetics top-1 +29.9 [" in text


def test_pretraining_not_resolved_is_not_a_win() -> None:
    values = {("baseline", 0): 50.0, ("baseline", 1): 52.0, ("random", 0): 48.0, ("random", 1): 51.0}  # +2, +1: 2 seeds
    text = summary(_long(values))
    assert "did not clearly beat random init on every downstream task: Kinetics top-1 +1.5 [−4.9, 7.9], p = 0.20, n = 2, not resolved" in text


# --------------------------------------------------------------------------- the other tables


def test_noise_gain_carries_the_interval_and_p(tmp_path: Path) -> None:
    roots = []
    for rate in (0.1, 0.5):
        root = fake_results(tmp_path / f"noise{rate}")
        run = layout.run_dir(root, "ms", "baseline", 0)
        run.mkdir(parents=True)
        (run / layout.CONFIG).write_text(f"data: {{noise: {{audio_rate: {rate}, text_rate: {rate}}}}}\n")
        roots.append(root)
    table = gain_vs_noise(roots)
    assert {"low", "high", "p"} <= set(table.columns) and sorted(table.noise_rate.unique()) == [0.1, 0.5]
    from cmgh.report import collect
    from cmgh.report.columns import HEADLINE

    row = table[(table.noise_rate == 0.1) & (table.variant == "gr_gcl") & (table.task == "kinetics")].iloc[0]
    c = compare_variants(collect(roots[0]), "ms", HEADLINE["kinetics"], "gr_gcl", "baseline")
    assert c is not None and (row["mean"], row["low"], row["high"], row["p"], row["n"]) == pytest.approx((c.mean, c.low, c.high, c.p, c.n))
    single = table[(table.variant == "gcl") & (table.task == "msrvtt")]
    assert (single.n == 1).all() and single.low.isna().all()
    import matplotlib

    matplotlib.use("Agg")
    paths = figure_noise_gain(roots, tmp_path / "figures")
    assert paths and all(p.stat().st_size > 1000 for p in paths)


def _per_seed() -> pd.DataFrame:
    """per_seed rows of two seeds, two windows: cosine AUROC 0.55/0.57, loss AUROC 0.60/0.64."""
    rows = [{"backbone": "ms", "variant": "baseline", "dataset": "howto100m", "metric": "auroc", "target": "either", "step": step,
             "step_to": step + 1, "seed": seed, "n": 10, "n_noisy": 5, "cos_representation": cos, "loss_va": loss}
            for step in (0, 2) for seed, (cos, loss) in enumerate([(0.55, 0.60), (0.57, 0.64)])]
    return pd.DataFrame(rows)


def test_noise_over_training_interval_and_indicator_difference() -> None:
    table = detection_over_training.aggregate(_per_seed(), ("baseline",))
    half = t975_1dof() * math.sqrt(2) * 0.01 / math.sqrt(2)  # two seeds: the t interval, std 0.01 sqrt(2)
    row = table.iloc[0]
    assert (row["cos_representation low"], row["cos_representation high"]) == pytest.approx((0.56 - half, 0.56 + half))
    assert "0.560 ± 0.014 [0.433, 0.687]" in detection_over_training.markdown(table)
    diff = detection_over_training.indicator_difference(_per_seed(), "cos_representation", "loss_va")  # -0.05, -0.07 per window
    assert list(diff.step) == [0, 2] and (diff.n == 2).all() and (diff.test == stats.T_TEST).all()
    assert list(diff["mean"]) == pytest.approx([-0.06, -0.06])
    assert (diff.low.iloc[0], diff.high.iloc[0]) == pytest.approx((-0.06 - half, -0.06 + half))
