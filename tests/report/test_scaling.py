"""The scaling report (cmgh.report.scaling): which variants pair, the gain from adding YouTube-8M
and its t-interval on results trees of real metrics.json files, and `cmgh report` writing it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmgh import config as config_mod
from cmgh import layout
from cmgh.errors import DataError
from cmgh.report import build_report, collect
from cmgh.report.scaling import DIFFERENCE, GAIN, Pair, gain_table, pairs, results_configs, variant_configs
from cmgh.report.stats import t_interval
from tests.helpers import REPO, run_cli
from tests.report.fake_results import fake_results

SCALING = REPO / "config" / "scaling.yaml"
YT = [{"dataset": "howto100m", "weight": 1}, {"dataset": "youtube8m", "weight": 1}]


def t975(dof: int) -> float:
    """Student t's 97.5 % quantile in closed form (1 dof: Cauchy; 2 dof: F(t) = 1/2 + t / (2 sqrt(2 + t^2)))."""
    return {1: math.tan(math.pi * 0.475), 2: 0.95 * math.sqrt(2 / (1 - 0.95**2))}[dof]


# Kinetics top-1 of the ms backbone by variant and seed (None: a failed evaluation). Gains from
# adding YouTube-8M: baseline -1, -2, 0; gr_gcl 3, 3, 4; small_loss 0, 2 (its seed 2 is missing).
TOP1: dict[str, list[float | None]] = {
    "random": [60, 61, 62],
    "baseline": [80, 82, 84], "baseline_yt8m": [79, 80, 84],
    "gr_gcl": [81, 83, 85], "gr_gcl_yt8m": [84, 86, 89],
    "small_loss": [80, 81, 82], "small_loss_yt8m": [80, 83, None],
}
GAINS = {"baseline": [-1, -2, 0], "gr_gcl": [3, 3, 4], "small_loss": [0, 2]}


def metrics(top1: float | None, backbone: str) -> dict[str, dict[str, float | None]]:
    """Every task's metrics of one run, from its Kinetics top-1 (ma: the same plus 1, so the same gains)."""
    if top1 is None:
        return {"kinetics": {"top1": None, "top5": None}, "audioset": {"mAP": None}, "msrvtt": {"t2v_R@10": None}}
    x = top1 + (1.0 if backbone == "ma" else 0.0)
    return {"kinetics": {"top1": x, "top5": 99.0}, "audioset": {"mAP": x / 100, "mAUC": 0.9}, "msrvtt": {"t2v_R@10": x - 20, "t2v_MedR": 3.0},
            "noise": {"auroc/cos_parameters/either": 0.5}}


def scaling_tree(root: Path, resolved: bool = True) -> Path:
    """metrics.json of config/scaling.yaml's variants x 3 seeds x both backbones (+ random init),
    and the resolved config the workflow writes (else each variant's run config)."""
    for backbone in ("ms", "ma"):
        for variant, values in TOP1.items():
            for seed, value in enumerate(values):
                for task, data in metrics(value, backbone).items():
                    path = layout.eval_metrics(root, task, backbone, variant, seed)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps({**data, "meta": {"task": task}}))
    cfg = config_mod.load(SCALING, overrides=[f"paths.results={root}"])
    if resolved:
        layout.resolved_config(root).parent.mkdir(parents=True, exist_ok=True)
        layout.resolved_config(root).write_text(cfg.to_yaml())
    else:  # as `cmgh pretrain` leaves it: each run's own resolved config beside its outputs
        for variant, tree in variant_configs(cfg).items():
            config_mod.from_dict(tree).write(layout.run_dir(root, "ms", variant, 0), layout.CONFIG)
    return root


def expected(values: list[float]) -> tuple[float, float, float, float, int]:
    x = np.asarray(values, dtype=float)
    half = t975(len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(x.std(ddof=1)), float(x.mean() - half), float(x.mean() + half), len(x)


# --------------------------------------------------------------------------- the pairing rule


def test_scaling_config_pairs_each_method_with_its_youtube8m_twin() -> None:
    found = pairs(variant_configs(config_mod.load(SCALING)))
    assert found == [Pair(m, f"{m}_yt8m", (("howto100m", 0.5), ("youtube8m", 0.5))) for m in ("baseline", "gr_gcl", "small_loss")]
    assert pairs(variant_configs(config_mod.load())) == []  # the default grid trains on HowTo100M only


def test_variants_pair_only_when_they_differ_by_added_youtube8m_alone() -> None:
    def corpora(*entries: tuple[str, float]) -> dict[str, object]:
        return {"pretrain": {"corpora": [{"dataset": d, "weight": w} for d, w in entries]}}

    tree = config_mod.load().to_dict()
    tree["variants"] = {
        "baseline": {},
        "mix": corpora(("howto100m", 1), ("youtube8m", 1)),
        "mix3": corpora(("howto100m", 2), ("youtube8m", 6)),  # another share of YouTube-8M: still an addition
        "zero": corpora(("howto100m", 1), ("youtube8m", 0)),  # weight 0 adds nothing
        "audio": corpora(("howto100m", 1), ("audioset", 1)),  # another corpus
        "gr_mix": {"pretrain": {**corpora(("howto100m", 1), ("youtube8m", 1))["pretrain"], "harmonize": {"rule": "cmgh"}}},  # and a method
        "ha": corpora(("howto100m", 3), ("audioset", 1)),
        "ha_yt": corpora(("howto100m", 3), ("audioset", 1), ("youtube8m", 4)),  # shared corpora keep 3:1
        "ha_yt_1to1": corpora(("howto100m", 1), ("audioset", 1), ("youtube8m", 2)),  # 1:1 is another mixture
        "shift": {"data": {"noise": {"text_rate": 0.5}}, **corpora(("howto100m", 1), ("youtube8m", 1))},  # another corpus noise
        "third": corpora(("howto100m", 1), ("youtube8m", 2)),
        "third_b": corpora(("howto100m", 0.3), ("youtube8m", 0.6)),  # the same mixture (0.3 / 0.9 is not 1 / 3 in floats)
    }
    found = {p.with_added: p for p in pairs(variant_configs(config_mod.from_dict(tree)))}
    assert {(p.method, p.with_added) for p in found.values()} == {
        ("baseline", "mix"), ("baseline", "mix3"), ("ha", "ha_yt"), ("audio", "ha_yt_1to1"), ("baseline", "third"), ("baseline", "third_b")}
    assert found["third"].mixture == found["third_b"].mixture != found["mix"].mixture


def test_results_configs_from_the_resolved_config_or_the_runs(tmp_path: Path) -> None:
    with_resolved = results_configs(scaling_tree(tmp_path / "a"))
    from_runs = results_configs(scaling_tree(tmp_path / "b", resolved=False))
    assert pairs(with_resolved) == pairs(from_runs) and len(pairs(from_runs)) == 3
    bad = layout.run_dir(tmp_path / "c", "ms", "baseline", 0) / layout.CONFIG
    bad.parent.mkdir(parents=True)
    bad.write_text("variants: {baseline: {}}\nmodel: {width: 63, heads: 4}\n")
    with pytest.raises(DataError, match=r"pretrain/ms/baseline/seed0/config.yaml: not a resolved run config \(model.heads"):
        results_configs(tmp_path / "c")


# --------------------------------------------------------------------------- gains and intervals


def test_t_interval_matches_the_closed_form_quantiles() -> None:
    for values in ([4.0, 5.0, 4.0], [1.0, 4.0]):
        assert t_interval(values) == pytest.approx(expected(values), rel=1e-12)
    mean, std, low, high, n = t_interval([2.5])
    assert (mean, n) == (2.5, 1) and all(math.isnan(v) for v in (std, low, high))


def test_report_writes_gains_and_their_difference_with_intervals(tmp_path: Path) -> None:
    root = scaling_tree(tmp_path)
    written = build_report(root)
    csv, md, png = layout.scaling_table(root, "csv"), layout.scaling_table(root, "md"), layout.scaling_figure(root)
    assert {csv, md} <= set(written["tables"]) and {png, layout.scaling_figure(root, "pdf")} <= set(written["figures"])
    assert png.stat().st_size > 1000 and layout.scaling_figure(root, "pdf").stat().st_size > 1000

    table = pd.read_csv(csv, keep_default_na=False)
    assert list(table.drop_duplicates(["backbone", "method", "quantity"])[["backbone", "method", "quantity"]].itertuples(index=False, name=None)) == [
        (b, m, q) for b in ("ma", "ms") for m, q in [("baseline", GAIN), ("gr_gcl", GAIN), ("small_loss", GAIN),
                                                      ("gr_gcl", DIFFERENCE), ("small_loss", DIFFERENCE)]]
    assert set(table.reference) == {"", "baseline"} and set(table[table.quantity == DIFFERENCE].reference) == {"baseline"}
    scale = {"kinetics": 1.0, "audioset": 0.01, "msrvtt": 1.0}  # mAP is top-1 / 100 in this tree
    for row in table.itertuples(index=False):
        gains = [g * scale[row.task] for g in GAINS[row.method]]
        if row.quantity == DIFFERENCE:  # paired by seed: the seeds all four variants ran
            gains = [g - b * scale[row.task] for g, b in zip(gains, GAINS["baseline"], strict=False)]
        got = (row.mean, row.std, row.ci_low, row.ci_high, row.n)
        assert got == pytest.approx(expected(gains), rel=1e-5, abs=1e-9), row
    ms = table[(table.backbone == "ms") & (table.task == "kinetics")].set_index(["method", "quantity"])
    assert ms.loc[("gr_gcl", DIFFERENCE), "mean"] == pytest.approx(13 / 3, rel=1e-5)  # 4, 5, 4
    assert ms.loc[("small_loss", GAIN), "n"] == 2 and ms.loc[("small_loss", DIFFERENCE), "mean"] == pytest.approx(2.5)

    text = md.read_text()
    assert "95 % t-interval over seeds" in text
    # gr_gcl's gain: 10/3 ± t(2) sqrt(1/3) / sqrt(3) = [1.898, 4.768], clear of 0: bold; baseline's [-3.48, 1.48] is not
    assert "| ms | gr_gcl | gr_gcl_yt8m | gain | **+3.3 [+1.9, +4.8]** | **+0.033 [+0.019, +0.048]** | **+3.3 [+1.9, +4.8]** | 3 |" in text
    assert "| ms | baseline | baseline_yt8m | gain | -1.0 [-3.5, +1.5] |" in text
    assert "| ms | small_loss | small_loss_yt8m | gain − baseline gain | +2.5 [-16.6, +21.6] |" in text


def test_cli_report_lists_the_scaling_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = scaling_tree(tmp_path)
    code, out, err = run_cli(capsys, "report", "--results", str(root))
    assert code == 0, err
    for path in (layout.scaling_table(root, "csv"), layout.scaling_table(root, "md"), layout.scaling_figure(root)):
        assert f": {path}\n" in out and path.is_file()


def test_no_pairs_no_scaling_outputs(tmp_path: Path) -> None:
    written = build_report(fake_results(tmp_path))  # the default variants: HowTo100M only
    assert not layout.scaling_table(tmp_path, "csv").exists() and not layout.scaling_figure(tmp_path).exists()
    assert all(layout.SCALING_TABLE not in p.name and layout.SCALING_FIGURE not in p.name for paths in written.values() for p in paths)


def test_difference_needs_a_baseline_pair_on_the_same_mixture(tmp_path: Path) -> None:
    long = collect(scaling_tree(tmp_path))
    half = (("howto100m", 0.5), ("youtube8m", 0.5))
    other = (("howto100m", 0.25), ("youtube8m", 0.75))
    table = gain_table(long, [Pair("baseline", "baseline_yt8m", other), Pair("gr_gcl", "gr_gcl_yt8m", half)])
    assert set(table.quantity) == {GAIN}
    assert gain_table(long, [Pair("gr_gcl", "gr_gcl_yt8m", half)]).quantity.tolist() == [GAIN] * 6
