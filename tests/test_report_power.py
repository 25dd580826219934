"""Equivalence (TOST) and the power of the paired t-test (cmgh.report.power) against values derived
independently: Student's t at 3 dof in closed form, and the noncentral t integrated by hand from its
definition T = (Z + ncp) / sqrt(V / dof), V ~ chi2(dof)."""

from __future__ import annotations

import math

import pytest

from cmgh.report import power


def t3_cdf(t: float) -> float:
    """Student's t CDF at 3 dof in closed form: 1/2 + (1/pi) (x / (1 + x^2) + atan x), x = t / sqrt 3."""
    x = t / math.sqrt(3.0)
    return 0.5 + (x / (1.0 + x * x) + math.atan(x)) / math.pi


def power_by_integration(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """P(|T| > c) for T = (Z + ncp) / sqrt(V / dof): integrate over V's chi-square density the two
    normal tails P(Z > c sqrt(V/dof) - ncp) + P(Z < -c sqrt(V/dof) - ncp)."""
    from scipy import integrate, stats

    dof, ncp = n - 1, effect * math.sqrt(n) / sd
    c = stats.t.ppf(1.0 - alpha / 2.0, dof)

    def tails(v: float) -> float:
        s = c * math.sqrt(v / dof)
        return (stats.norm.sf(s - ncp) + stats.norm.cdf(-s - ncp)) * stats.chi2.pdf(v, dof)

    return integrate.quad(tails, 0.0, math.inf, limit=200)[0]


# --------------------------------------------------------------------------- equivalence


def test_tost_against_the_closed_form_t_at_3_dof() -> None:
    # d = 0, 1, 0, 1: mean 0.5, sd sqrt(1/3), se = sqrt(1/3) / 2 = 0.2887, 3 dof
    d, se = [0.0, 1.0, 0.0, 1.0], math.sqrt(1.0 / 3.0) / 2.0
    wide = power.equivalence(d, margin=1.5)
    # the larger one-sided p is the upper test's: P(T3 < (0.5 - 1.5) / se) = P(T3 < -3.464)
    assert wide.p == pytest.approx(t3_cdf((0.5 - 1.5) / se), rel=1e-9) and wide.p == pytest.approx(0.0203, abs=1e-4)
    assert wide.equivalent
    # the 90 % interval: 0.5 ± t_{0.95, 3} se, t_{0.95, 3} = 2.353363 (the root of t3_cdf = 0.95)
    assert (wide.low, wide.high) == pytest.approx((0.5 - 2.353363 * se, 0.5 + 2.353363 * se), abs=1e-6)
    assert t3_cdf(2.353363) == pytest.approx(0.95, abs=1e-7)
    narrow = power.equivalence(d, margin=1.0)  # upper end 1.18 > 1: not equivalent, p = P(T3 < -1.732) = 0.0908
    assert narrow.p == pytest.approx(t3_cdf(-0.5 / se), rel=1e-9) and not narrow.equivalent
    assert narrow.p == pytest.approx(0.0908, abs=1e-4)


def test_tost_is_the_90_percent_interval_inside_the_margin() -> None:
    d = [0.3, -0.2, 0.5, 0.1, -0.4]
    e = power.equivalence(d, margin=1.0)
    assert e.equivalent == (-1.0 < e.low and e.high < 1.0)
    just = max(abs(e.low), abs(e.high))
    assert power.equivalence(d, margin=just * 1.001).equivalent and not power.equivalence(d, margin=just * 0.999).equivalent


def test_tost_without_spread_or_seeds() -> None:
    assert power.equivalence([0.5, 0.5, 0.5], 1.0).equivalent
    assert not power.equivalence([1.5, 1.5], 1.0).equivalent
    assert not power.equivalence([0.1], 1.0).equivalent  # one seed: no test
    with pytest.raises(ValueError, match="margin"):
        power.equivalence([0.1, 0.2], 0.0)


# --------------------------------------------------------------------------- power and detectable effect


@pytest.mark.parametrize(("effect", "sd", "n"), [(1.0, 1.0, 5), (2.0, 3.5, 10), (10.6, 6.3, 5), (0.5, 1.0, 30)])
def test_power_is_the_noncentral_t_integrated_by_hand(effect: float, sd: float, n: int) -> None:
    assert power.power(effect, sd, n) == pytest.approx(power_by_integration(effect, sd, n), abs=1e-6)


def test_power_at_no_effect_is_alpha() -> None:
    assert power.power(0.0, 2.0, 5) == pytest.approx(0.05, abs=1e-12)
    assert power.power(0.0, 2.0, 5, alpha=0.01) == pytest.approx(0.01, abs=1e-12)


def test_detectable_effect_has_80_percent_power_and_beats_the_normal_approximation() -> None:
    # the audit's MDE table (paired sd per task, n = 5 / 10 / 20 / 50): Kinetics sd 3.5 at 5 seeds
    # 5.9 points, MSR-VTT sd 6.3: 10.6, 6.3, 4.2, 2.5
    assert power.detectable_effect(3.5, 5) == pytest.approx(5.89, abs=0.01)
    assert [round(power.detectable_effect(6.3, n), 1) for n in (5, 10, 20, 50)] == [10.6, 6.3, 4.2, 2.5]
    for n in (3, 5, 12):
        mde = power.detectable_effect(1.0, n)
        assert power_by_integration(mde, 1.0, n) == pytest.approx(0.8, abs=1e-6)
        assert mde > 2.8016 / math.sqrt(n)  # z_0.975 + z_0.8 = 1.95996 + 0.84162: the normal approximation
    # with many seeds the t-test is the z-test: within 0.2 % of the normal approximation at 2000
    assert power.detectable_effect(1.0, 2000) == pytest.approx(2.8016 / math.sqrt(2000), rel=2e-3)
    assert math.isnan(power.detectable_effect(1.0, 1)) and math.isnan(power.detectable_effect(0.0, 5))


def test_seeds_for_a_target_effect_is_the_first_n_with_enough_power() -> None:
    n = power.seeds_for(2.0, 3.5)
    assert n == 27  # the audit: about 20-30 seeds for a 2-point Kinetics effect
    assert power.power(2.0, 3.5, n) >= 0.8 > power.power(2.0, 3.5, n - 1)
    assert power.seeds_for(-2.0, 3.5) == n  # the sign does not matter
    assert power.seeds_for(0.0, 3.5) is None and power.seeds_for(1.0, 0.0) is None
