"""The report's noise detection over training: every run's `noise_training` windows aggregated over
seeds (mean, std, interval of cmgh.report.stats), a Markdown table per variant, a figure per variant."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from cmgh import layout
from cmgh.evaluate import NOISE_TRAINING
from cmgh.evaluate.run import evaluate_run
from cmgh.report import detection_over_training, stats
from tests.evaluate.score_dumps import world_config, write_run, write_world


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """baseline (2 seeds: the second's misaligned-audio losses fall below the clean ones in steps 2-3) and gr (1 seed)."""
    cfg = world_config(tmp_path)
    write_world(cfg)
    for seed, variant, shift in ((0, "baseline", 0.0), (1, "baseline", -0.62), (0, "gr", 0.0)):
        evaluate_run(cfg, NOISE_TRAINING, write_run(cfg, seed, variant, shift))
    return cfg.path("results")


def test_the_table_aggregates_each_runs_windows_over_seeds(results: Path) -> None:
    table = detection_over_training.noise_over_training(results)
    assert list(dict.fromkeys(table["variant"])) == ["baseline", "gr"]
    assert len(table) == 2 * 2 * 3 * 2  # variants x metrics x targets x windows
    row = table[(table.variant == "baseline") & (table.metric == "auroc") & (table.target == "audio") & (table.step == 2)].iloc[0]
    # seed 0: AUROC 1; seed 1: v0's losses 0.18, 0.33 against 0.1, 0.3, 0.2, 0.4 -> (1 + 3) / 8
    mean, std, low, high, n = stats.t_interval([1.0, 0.5])
    assert (row["seeds"], row["triplets"], row["misaligned"]) == (2, 6, pytest.approx(2 / 6))
    assert (row["loss_va mean"], row["loss_va std"], row["loss_va low"], row["loss_va high"]) == pytest.approx((mean, std, low, high))
    gr = table[(table.variant == "gr") & (table.metric == "ap") & (table.target == "either") & (table.step == 0)].iloc[0]
    assert gr["seeds"] == 1 and gr["loss_va mean"] == pytest.approx(0.65) and math.isnan(gr["loss_va low"])  # one seed: no interval
    text = table[(table.variant == "baseline") & (table.target == "text") & (table.step == 2)]
    assert text["loss_va mean"].isna().all()  # no misaligned text in steps 2-3 of any seed

    data = detection_over_training.per_seed(results)
    diff = detection_over_training.indicator_difference(data, "cos_representation", "loss_va")
    first = diff[(diff.variant == "baseline") & (diff.metric == "auroc") & (diff.target == "audio") & (diff.step == 0)].iloc[0]
    assert first["mean"] == pytest.approx(0.25 - 0.75) and first["n"] == 2  # paired by seed


def test_markdown_has_a_section_per_variant_and_a_table_per_metric(results: Path) -> None:
    md = detection_over_training.markdown(detection_over_training.noise_over_training(results))
    assert md.startswith(detection_over_training.CAPTION)
    assert md.index("## ms · baseline · howto100m") < md.index("## ms · gr · howto100m")
    section = md.split("## ms · gr · howto100m")[1]
    assert section.count("AUROC (chance 0.5):") == 1 and section.count("average precision (chance: the misaligned share):") == 1
    assert "| audio | 0-1 | 1 | 8 | 0.25 | 0.750 |" in section  # one seed: the mean alone
    baseline = md.split("## ms · gr · howto100m")[0]
    mean, std, low, high, _ = stats.t_interval([1.0, 0.5])
    assert f"| audio | 2-3 | 2 | 6 | 0.33 | {mean:.3f} ± {std:.3f} [{low:.3f}, {high:.3f}] |" in baseline
    assert "| text | 2-3 | 2 | 6 | 0.00 | - |" in baseline


def test_build_writes_the_tables_and_a_figure_per_variant(results: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    written = detection_over_training.build(results, ("random", "baseline", "gr"))
    assert written["tables"] == [layout.noise_training_table(results, "csv"), layout.noise_training_table(results, "md")]
    figures = [layout.noise_training_figure(results, "ms", v, ext) for v in ("baseline", "gr") for ext in ("png", "pdf")]
    assert written["figures"] == figures and all(p.stat().st_size > 1000 for p in figures)
    csv = pd.read_csv(layout.noise_training_table(results, "csv"))
    assert list(csv.columns[:10]) == [*detection_over_training.KEYS, "seeds", "triplets", "misaligned"]


def test_a_variant_whose_runs_scored_nothing_still_gets_its_figure(results: Path, tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    cfg = world_config(tmp_path)
    evaluate_run(cfg, NOISE_TRAINING, write_run(cfg, 0, "gcl", dumps=False))  # skipped: no dumps
    written = detection_over_training.build(results, ("baseline", "gr", "gcl"))
    assert layout.noise_training_figure(results, "ms", "gcl") in written["figures"]
    assert "gcl" not in set(pd.read_csv(layout.noise_training_table(results, "csv"))["variant"])


def test_a_broken_windows_table_is_a_one_line_error(results: Path) -> None:
    from cmgh.errors import DataError

    path = layout.eval_dir(results, NOISE_TRAINING, "ms", "gr", 0) / layout.NOISE_WINDOWS
    table = pd.read_csv(path)
    pd.concat([table, table.iloc[:1]]).to_csv(path, index=False)
    with pytest.raises(DataError, match=rf"^{path}: dataset howto100m, indicator cos_meeting_point, target audio, step 0 appears twice"):
        detection_over_training.noise_over_training(results)
    table.drop(columns=["ap"]).to_csv(path, index=False)
    with pytest.raises(DataError, match=rf"^{path}: no column ap \(expected dataset, indicator"):
        detection_over_training.noise_over_training(results)
