"""The primary analysis of a noise study on synthetic tables of known numbers: the gain pooled over
worlds and its slope (cmgh.report.pooled), the headroom and its "no headroom" rule
(cmgh.report.headroom), the flagged runs (cmgh.report.run_checks) and the verdicts
(cmgh.report.primary)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmgh import layout
from cmgh.report import headroom, pooled, power, primary, run_checks
from cmgh.report.columns import HEADLINE

R10, MAP = HEADLINE["msrvtt"], HEADLINE["audioset"]


def _rows(variant: str, modality: str, rate: float, col, values, seeds=None, backbone: str = "ms") -> list[dict]:
    seeds = range(len(values)) if seeds is None else seeds
    return [{"modality": modality, "noise_rate": rate, "backbone": backbone, "variant": variant, "seed": s,
             "task": col.task, "metric": col.metric, "value": float(v)} for s, v in zip(seeds, values, strict=True)]


def _table(*parts: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([row for part in parts for row in part])


# d[world, seed] = gr - baseline: clean 0, 0, 0; text 0.2: 1, 2, 3; text 0.4: 3, 4, 8
BASE = {0.0: [30.0, 31.0, 29.0], 0.2: [20.0, 21.0, 19.0], 0.4: [10.0, 12.0, 11.0]}
GAIN = {0.0: [0.0, 0.0, 0.0], 0.2: [1.0, 2.0, 3.0], 0.4: [3.0, 4.0, 8.0]}


def _world(rate: float) -> str:
    return "both" if rate == 0 else "text"


def _gr_table() -> pd.DataFrame:
    return _table(*(_rows("baseline", _world(r), r, R10, BASE[r]) for r in BASE),
                  *(_rows("gr", _world(r), r, R10, np.add(BASE[r], GAIN[r])) for r in BASE))


# --------------------------------------------------------------------------- pooled gain and slope


def test_pooled_gain_is_the_per_seed_mean_over_noisy_worlds_with_a_t_interval_over_seeds() -> None:
    d = pooled.differences(_gr_table(), "ms", "msrvtt", "t2v_R@10", "gr")
    g = pooled.pooled_gain(d)
    # per seed over text 0.2 and 0.4: 2, 3, 5.5; mean 3.5, sd sqrt(3.25); t_{0.975, 2} = 4.302653
    assert g.per_seed == pytest.approx((2.0, 3.0, 5.5)) and (g.mean, g.sd, g.n) == pytest.approx((3.5, math.sqrt(3.25), 3))
    half = 4.302653 * math.sqrt(3.25) / math.sqrt(3)
    assert (g.low, g.high) == pytest.approx((3.5 - half, 3.5 + half), abs=1e-5)
    assert (g.worlds, g.positive) == (2, 2)


def test_pooled_gain_is_the_variant_coefficient_of_metric_on_world_and_variant() -> None:
    values = _gr_table()
    noisy = values[values.noise_rate > 0]
    # least squares: value ~ intercept + [world text 0.4] + [variant gr] on the noisy worlds' runs
    x = np.column_stack([np.ones(len(noisy)), (noisy.noise_rate == 0.4).astype(float), (noisy.variant == "gr").astype(float)])
    coef = np.linalg.lstsq(x, noisy["value"].to_numpy(), rcond=None)[0]
    assert pooled.pooled_gain(pooled.differences(values, "ms", "msrvtt", "t2v_R@10", "gr")).mean == pytest.approx(coef[2])


def test_slope_is_the_mean_of_per_seed_least_squares_slopes_clean_world_included() -> None:
    s = pooled.slope(pooled.differences(_gr_table(), "ms", "msrvtt", "t2v_R@10", "gr"))
    # per seed over rates 0, 0.2, 0.4 (centred -0.2, 0, 0.2; sum of squares 0.08): 0.6/0.08, 0.8/0.08, 1.6/0.08
    assert s.per_seed == pytest.approx((7.5, 10.0, 20.0)) and s.mean == pytest.approx(12.5)
    # with every world at every seed it is the pooled least-squares slope: 0.2 * (3 + 4 + 8) / (3 * 0.08)
    assert s.mean == pytest.approx(0.2 * 15 / 0.24) and s.worlds == 3


# --------------------------------------------------------------------------- headroom


def test_gap_paired_by_seed_when_the_worlds_share_seeds_else_welch() -> None:
    clean = _rows("baseline", "both", 0.0, R10, [10.0, 11.0, 12.0])
    paired = headroom.gap(_table(clean, _rows("baseline", "text", 0.4, R10, [5.0, 7.0, 6.0])), "ms", R10, "text", 0.4)
    assert (paired.mean, paired.n, paired.how) == (5.0, 3, headroom.PAIRED) and paired.resolved  # d = 5, 4, 6: t = 8.66, p = 0.013
    welch = headroom.gap(_table(clean, _rows("baseline", "text", 0.4, R10, [5.0, 7.0, 6.0], seeds=[3, 4, 5])), "ms", R10, "text", 0.4)
    # Welch: se = sqrt(1/3 + 1/3), dof = (2/3)^2 / (2 (1/3)^2 / 2) = 4, t_{0.975, 4} = 2.776445
    half = 2.776445 * math.sqrt(2.0 / 3.0)
    assert welch.how == headroom.WELCH and (welch.mean, welch.low, welch.high) == pytest.approx((5.0, 5.0 - half, 5.0 + half), abs=1e-5)


def test_a_lower_is_better_gap_is_noisy_minus_clean() -> None:
    medr = primary.Endpoint("msrvtt", "t2v_MedR", "text").column
    assert medr.lower_is_better
    values = _table(_rows("baseline", "both", 0.0, medr, [17.0, 18.0, 16.0]), _rows("baseline", "text", 0.6, medr, [69.0, 60.0, 75.0]))
    g = headroom.gap(values, "ms", medr, "text", 0.6)
    assert g.mean == pytest.approx((69 + 60 + 75 - 17 - 18 - 16) / 3) and g.mean > 0


def test_no_headroom_cells_are_left_out_of_the_comparisons_and_the_family() -> None:
    # MSR-VTT under text noise: the baseline loses ~20 points; AudioSet under audio noise: nothing
    flat = {0.0: [0.70, 0.72, 0.71], 0.2: [0.71, 0.70, 0.72], 0.4: [0.72, 0.71, 0.70]}
    audio = "audio"
    values = pd.concat([_gr_table(), _table(
        *(_rows("baseline", "both" if r == 0 else audio, r, MAP, flat[r]) for r in flat),
        *(_rows("gr", "both" if r == 0 else audio, r, MAP, np.add(flat[r], 0.05)) for r in flat),
    )], ignore_index=True)
    analysis = primary.Settings((primary.Endpoint("msrvtt", "t2v_R@10", "text"), primary.Endpoint("audioset", "mAP", "audio")),
                                {"t2v_R@10": 2.0, "mAP": 0.01})
    results = primary.analyse(values, analysis, ["gr"])
    msrvtt, audioset = results
    assert msrvtt.headroom and [v.variant for v in msrvtt.variants] == ["gr"]
    assert not audioset.headroom and audioset.variants == []  # +0.05 everywhere, yet never compared
    assert primary.family_size(results) == 2  # gr's pooled gain and slope on MSR-VTT only
    text = "\n".join(primary.conclusions(results, ["gr"]))
    assert "AudioSet mAP under audio noise (ms): no headroom: no method can win here (" in text
    assert "No positive control in this study" in text
    assert msrvtt.mean_gap == pytest.approx((10.0 + 19.0) / 2)  # clean - text 0.2 is 10, clean - text 0.4 is 19


# --------------------------------------------------------------------------- verdicts and the positive control


def _study(gain: dict[str, list[float]]) -> pd.DataFrame:
    """Clean 40, text 0.6 at 10 (a 30-point gap) over 6 seeds; each variant's per-seed gain at 0.6
    (the variants ran the noisy world only: no slope)."""
    base = [10.0 + w for w in (0.1, 0.4, -0.3, 0.2, -0.2, -0.2)]
    parts = [_rows("baseline", "both", 0.0, R10, [40.0 + w for w in (0.0, 0.5, -0.5, 0.3, -0.3, 0.0)]), _rows("baseline", "text", 0.6, R10, base)]
    parts += [_rows(v, "text", 0.6, R10, np.add(base, g)) for v, g in gain.items()]
    return _table(*parts)


def test_verdicts_better_equivalent_inconclusive_and_the_oracle_share() -> None:
    gains = {
        "oracle": [15.0, 14.0, 16.0, 15.0, 14.5, 15.5],  # half the 30-point gap
        "gr": [4.0, 5.0, 6.0, 5.0, 4.5, 5.5],  # clearly better
        "gcl": [0.1, -0.1, 0.2, -0.2, 0.0, 0.0],  # equivalent within ±2
        "small_loss": [6.0, -7.0, 5.0, -4.0, 3.0, -2.0],  # too noisy to say
    }
    analysis = primary.Settings((primary.Endpoint("msrvtt", "t2v_R@10", "text"),), {"t2v_R@10": 2.0})
    (result,) = primary.analyse(_study(gains), analysis, primary.compared_variants(_study(gains), ["gr", "gcl", "small_loss"]))
    by = {v.variant: v for v in result.variants}
    assert list(by) == ["oracle", "gr", "gcl", "small_loss"]  # the control first
    assert primary.verdict(result, by["gr"]) == "better"
    assert primary.verdict(result, by["gcl"]) == "equivalent within ±2.0"
    noisy = by["small_loss"]
    mde = power.detectable_effect(float(np.std(gains["small_loss"], ddof=1)), 6)
    assert noisy.mde == pytest.approx(mde) and primary.verdict(result, noisy) == f"inconclusive (MDE {mde:.1f})"
    assert primary.share(result, by["oracle"]).startswith("50 % [")  # 15 of 30
    assert primary.family_size([result]) == 3  # gr, gcl, small_loss: pooled gains only (no slope from one rate)
    text = "\n".join(primary.conclusions([result], list(by)))
    assert "No positive control" not in text and "`oracle` (positive control) +15.0 [" in text and "(50 % [" in text
    assert "`gcl` " in text and ": equivalent within ±2.0" in text
    page = primary.section([result])
    assert "| `oracle` (positive control) |" in page and "| variant | pooled gain | share of the gap |" in page


def test_settings_come_from_the_config_with_the_schema_defaults() -> None:
    default = primary.settings({})
    assert [(e.task, e.metric, e.modality) for e in default.endpoints] == [("msrvtt", "t2v_R@10", "text"), ("audioset", "mAP", "audio")]
    assert default.margins == {"top1": 2.0, "mAP": 0.01, "t2v_R@10": 2.0} and default.power == 0.8
    mine = primary.settings({"worlds": {"analysis": {"primary": [{"task": "kinetics", "metric": "top1", "modality": "audio"}]}}})
    assert [e.name for e in mine.endpoints] == ["Kinetics top-1 under audio noise"] and mine.margins["top1"] == 2.0


# --------------------------------------------------------------------------- flagged runs


def test_diverged_and_collapsed_runs_are_flagged_and_left_out(tmp_path: Path) -> None:
    values = _table(_rows("random", "text", 0.4, R10, [4.0, 3.0, 5.0]),  # floor 4
                    _rows("baseline", "text", 0.4, R10, [10.0, 2.5, 1.9]),  # seed 1: 1.5 below the floor; seed 2: 2.1 below
                    _rows("gr", "text", 0.4, R10, [12.0, float("nan"), 11.0]))
    losses = pd.DataFrame([{"modality": "text", "noise_rate": 0.4, "backbone": "ms", "variant": "gr", "seed": 2, "loss": float("nan")},
                           {"modality": "text", "noise_rate": 0.4, "backbone": "ms", "variant": "gr", "seed": 0, "loss": 1.2}])
    flags = run_checks.flag_runs(values, losses, [R10], {"t2v_R@10": 2.0})
    got = sorted(zip(flags.variant, flags.seed, flags.reason, strict=True))
    assert got == [("baseline", 2, run_checks.COLLAPSED), ("gr", 1, run_checks.NO_VALUE), ("gr", 2, run_checks.DIVERGED)]
    kept = run_checks.excluded(values, flags)
    assert len(kept) == len(values) - 3 and not ((kept.variant == "gr") & (kept.seed == 2)).any()
    assert "3 run(s) flagged" in run_checks.flags_section(flags, True)
    run = tmp_path / "run"
    run.mkdir()
    (run / layout.TRAIN_LOG).write_text(json.dumps({"step": 0, "loss": 2.0}) + "\n" + '{"step": 1, "loss": NaN}\n')
    assert math.isnan(run_checks.final_loss(run)) and run_checks.final_loss(tmp_path) is None


def test_declared_controls_are_outside_the_family_with_their_own_p() -> None:
    gains = {"oracle": [15.0, 14.0, 16.0, 15.0, 14.5, 15.5], "norm_matched": [0.3, -0.2, 0.1, 0.0, 0.2, -0.1],
             "gr": [4.0, 5.0, 6.0, 5.0, 4.5, 5.5]}
    endpoint = (primary.Endpoint("msrvtt", "t2v_R@10", "text"),)
    declared = primary.Settings(endpoint, {"t2v_R@10": 2.0}, controls=frozenset({"oracle", "norm_matched"}))
    (result,) = primary.analyse(_study(gains), declared, list(gains))
    roles = {v.variant: v.role for v in result.variants}
    assert roles == {"oracle": "positive control", "norm_matched": "control", "gr": "method"}
    assert primary.family_size([result]) == 1  # gr's pooled gain only (one noisy world: no slope)
    assert "`norm_matched` (control) +0.1 [−0.1, 0.2], p = 0.54, 6 seeds × 1 world (0 % [0, 1] of the gap): equivalent within ±2.0" in "\n".join(primary.conclusions([result], list(gains)))
    (default,) = primary.analyse(_study(gains), primary.Settings(endpoint, {"t2v_R@10": 2.0}), list(gains))
    assert primary.family_size([default]) == 2  # undeclared, norm_matched is a method like any other
