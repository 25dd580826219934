"""`cmgh report` on a results folder built by real runs: 2 variants x 2 seeds (+ random init)."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from cmgh import config as config_mod
from cmgh import layout
from cmgh.errors import DataError
from cmgh.evaluate import TASKS
from cmgh.evaluate import NOISE_TRAINING
from cmgh.evaluate.run import evaluate, evaluate_run
from cmgh.report import ABLATION_COLUMNS, build_report, collect
from cmgh.report.collect import configured_variants, variant_order
from cmgh.report.detection_over_training import noise_over_training
from cmgh.train.loop import RunSpec, pretrain
from tests.helpers import cmgh_process
from tests.report.fake_results import fake_results

GOLDEN = Path(__file__).parent / "golden" / "report"

SMALL = ["pretrain.batch_size=8", "pretrain.steps=6", "pretrain.warmup_steps=2", "pretrain.score_every=2",
         "pretrain.curriculum.warmup_steps=2", "model.width=32", "model.heads=2", "model.depth=1",
         "evaluate.batch_size=8", "evaluate.probe_max_iter=30", "evaluate.noise.batch_size=12",
         "evaluate.kinetics.weight_decays=[0.1]", "evaluate.audioset.weight_decays=[0.1]"]


@pytest.fixture(scope="module")
def results(tiny_world: config_mod.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report") / "results"
    cfg = config_mod.with_overrides(tiny_world, [*SMALL, f"paths.results={root}"])
    for variant in ("baseline", "gr_gcl"):
        for seed in (0, 1):
            run = root / "pretrain" / "ms" / variant / f"seed{seed}"
            pretrain(cfg, RunSpec("ms", variant, seed, run))
            for task in TASKS:
                evaluate(cfg, task, run)  # default out: results/eval/{task}/ms/{variant}/seed{seed}
                if variant == "baseline":
                    evaluate(cfg, task, run, random_init=True)
            evaluate_run(cfg, NOISE_TRAINING, run)
    return root


@pytest.mark.slow
def test_collect_finds_every_run(results: Path) -> None:
    long = collect(results)
    runs = long[["task", "variant", "seed"]].drop_duplicates()
    assert len(runs) == len(TASKS) * 3 * 2 + 2 * 2  # and noise detection over training of each pre-trained run (no random init)
    assert set(long.variant) == {"random", "baseline", "gr_gcl"}
    assert {"top1", "mAP", "t2v_R@10", "auroc/cos_parameters/either"} <= set(long.metric)
    assert "meta" not in set(long.metric) and "params" not in set(long.metric)


@pytest.mark.slow
def test_cli_report_writes_tables_figures_and_summary(results: Path) -> None:
    proc = cmgh_process("report", "--results", str(results), timeout=300)
    assert proc.returncode == 0, proc.stderr
    tables, figures = results / "tables", results / "figures"
    for name in ("ablation.csv", "ablation.md", "ablation.tex", "summary.md", "metrics_long.csv", "metrics_wide.csv"):
        assert (tables / name).is_file(), name
    for stem in ("conflict_cosine_hist", "fractions", "training_curves", "noise_roc"):
        for ext in ("png", "pdf"):
            assert (figures / f"{stem}.{ext}").stat().st_size > 1000, (stem, ext)

    csv = pd.read_csv(tables / "ablation.csv")
    assert list(csv["variant"]) == ["random", "baseline", "gr_gcl"]
    assert (csv["K top-1 n"] == 2).all()
    long = pd.read_csv(tables / "metrics_long.csv")
    top1 = long[(long.metric == "top1") & (long.variant == "baseline")]["value"]
    assert math.isclose(csv.loc[csv.variant == "baseline", "K top-1 mean"].item(), top1.mean(), rel_tol=1e-5)

    md = (tables / "ablation.md").read_text()
    assert md.count("\n| ms |") == 3 and "±" in md and "**" in md
    tex = (tables / "ablation.tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex and r"\textbf{" in tex
    assert r"\pm" in tex and "gr\\_gcl" in tex
    # every column has a bold cell (its best mean), MedR included (lowest wins)
    body = [line for line in tex.splitlines() if line.startswith("ms &")]
    assert len(body) == 3
    for j in range(2, 2 + len(ABLATION_COLUMNS)):
        cells = [line.split(" & ")[j] for line in body]
        assert any(c.startswith(r"\textbf") for c in cells) or all(c.strip(" \\") == "-" for c in cells), j

    text = (tables / "summary.md").read_text()
    assert "**gr_gcl** vs baseline" in text and "**Pre-training**" in text
    assert "Kinetics top-1" in text and "n = 2" in text


@pytest.mark.slow
def test_best_is_lowest_for_rank_metrics(results: Path) -> None:
    long = collect(results)
    from cmgh.report import _best_rows, ablation

    table = ablation(long)
    medr = next(c for c in ABLATION_COLUMNS if c.metric == "t2v_MedR")
    best = _best_rows(table, medr)
    values = table[f"{medr.label} mean"]
    assert {int(i) for i in best} == {i for i, v in enumerate(values) if v == values.min()}


def test_empty_results_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no metrics.json found"):
        build_report(tmp_path)
    (tmp_path / "eval" / "kinetics" / "ms" / "baseline" / "seed0").mkdir(parents=True)
    (tmp_path / "eval" / "kinetics" / "ms" / "baseline" / "seed0" / "metrics.json").write_text("{broken")
    with pytest.raises(DataError, match="not a metrics file"):
        collect(tmp_path)


@pytest.mark.slow
def test_gain_vs_noise_rate_across_results_trees(results: Path, tmp_path: Path) -> None:
    import shutil

    import yaml

    # The same grid "at another noise rate": a copy whose runs record a different data.noise.
    other = tmp_path / "noisier"
    shutil.copytree(results, other)
    for path in (other / "pretrain").glob("*/*/seed*/config.yaml"):
        tree = yaml.safe_load(path.read_text())
        tree["data"]["noise"] = {**tree["data"]["noise"], "audio_rate": 0.5, "text_rate": 0.5}
        path.write_text(yaml.safe_dump(tree))
    proc = cmgh_process("report", "--results", str(results), "--compare", str(other), timeout=300)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(results / "figures" / "noise_gain.csv")
    assert sorted(table["noise_rate"].unique()) == [0.3, 0.5]
    assert set(table["variant"]) == {"gr_gcl"} and set(table["task"]) == {"kinetics", "audioset", "msrvtt"}
    assert (results / "figures" / "noise_gain.png").stat().st_size > 1000


def test_default_variants_output_is_unchanged(tmp_path: Path) -> None:
    """Golden files written by the report before its comparisons were derived from the config."""
    written = build_report(fake_results(tmp_path))
    tables = layout.tables_dir(tmp_path)
    for name in ("ablation.csv", "ablation.md", "ablation.tex", "summary.md"):
        assert tables / name in written["tables"]
        assert (tables / name).read_bytes() == (GOLDEN / name).read_bytes(), name


def test_a_metrics_file_of_the_wrong_shape_is_one_line(tmp_path: Path) -> None:
    fake_results(tmp_path)
    path = layout.eval_metrics(tmp_path, "kinetics", "ms", "gr", 1)
    path.write_text("[1, 2]")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: not a metrics file \(a JSON list; expected an object of metric: number\)$"):
        collect(tmp_path)


def test_a_non_finite_metric_is_named_and_never_reaches_a_table(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake_results(tmp_path)
    path = layout.eval_metrics(tmp_path, "kinetics", "ms", "gr", 1)
    path.write_text('{"top1": Infinity, "top5": NaN}')  # what json.dumps writes for inf and nan
    with caplog.at_level(logging.WARNING):
        build_report(tmp_path)
    assert f"{path}: top1 is inf, not a finite number: left out of the tables" in caplog.text and "top5 is nan" in caplog.text
    ablation = (layout.tables_dir(tmp_path) / "ablation.csv").read_text()
    assert "inf" not in ablation.lower()


def test_an_added_variant_is_compared_in_config_order(tmp_path: Path) -> None:
    variants = ("baseline", "pcgrad", "gr", "gcl", "gr_gcl")  # the config lists pcgrad second
    build_report(fake_results(tmp_path, variants))
    tables = layout.tables_dir(tmp_path)
    assert list(pd.read_csv(tables / "ablation.csv")["variant"]) == ["random", *variants]
    text = (tables / "summary.md").read_text()
    assert "**pcgrad** vs baseline: " in text
    positions = [text.index(f"**{v}** vs baseline") for v in variants[1:]]
    assert positions == sorted(positions)


def test_variant_order_without_a_config_is_alphabetical_after_baseline(tmp_path: Path) -> None:
    fake_results(tmp_path, ("baseline", "pcgrad", "gr"), resolved=False)
    assert configured_variants(tmp_path) == []
    build_report(tmp_path)
    assert list(pd.read_csv(layout.tables_dir(tmp_path) / "ablation.csv")["variant"]) == ["random", "baseline", "gr", "pcgrad"]
    # a run's own config (written beside its outputs) carries the config's order too
    run = layout.run_dir(tmp_path, "ms", "baseline", 0)
    run.mkdir(parents=True)
    (run / layout.CONFIG).write_text("variants: {baseline: {}, pcgrad: {}, gr: {}}\n")
    assert configured_variants(tmp_path) == ["baseline", "pcgrad", "gr"]
    found = {"zeta", "gr", "baseline", "random", "alpha"}
    assert variant_order(found, ["baseline", "zeta", "gr", "absent"]) == ("random", "baseline", "zeta", "gr", "alpha")
    assert variant_order(found) == ("random", "baseline", "alpha", "gr", "zeta")


# --------------------------------------------------------------------------- noise detection over training


@pytest.mark.slow
def test_noise_over_training_table(results: Path) -> None:
    build_report(results)
    tables = layout.tables_dir(results)
    table = pd.read_csv(tables / "noise_over_training.csv")
    # SMALL: 6 steps, a dump every 2 -> windows of 2 steps; 2 metrics x 3 targets x 3 windows per variant
    assert list(table["variant"]) == ["baseline"] * 18 + ["gr_gcl"] * 18
    either = table[(table.metric == "auroc") & (table.target == "either")]
    assert list(either["step"]) == [0, 2, 4] * 2 and list(either["step_to"]) == [1, 3, 5] * 2
    assert (table["seeds"] == 2).all()
    names = ["cos_meeting_point", "cos_representation", "loss_va", "loss_vt", "loss_total"]
    assert all(f"{n} {q}" in table for n in names for q in ("mean", "std", "low", "high"))
    per_seed = [pd.read_csv(layout.eval_dir(results, NOISE_TRAINING, "ms", "baseline", s) / layout.NOISE_WINDOWS) for s in (0, 1)]
    runs = pd.concat(per_seed)
    expected = runs[(runs.indicator == "loss_va") & (runs.target == "either")].groupby("step")["auroc"].mean()
    got = either[either.variant == "baseline"].set_index("step")["loss_va mean"]
    assert list(got.round(5)) == list(expected.round(5))
    md = (tables / "noise_over_training.md").read_text()
    assert "## ms · baseline · howto100m" in md and "| either | 0-1 | 2 |" in md and "±" in md and "average precision" in md
    for variant in ("baseline", "gr_gcl"):
        assert layout.noise_training_figure(results, "ms", variant).stat().st_size > 1000


def test_runs_without_windows_are_left_out_with_a_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = layout.eval_dir(tmp_path, NOISE_TRAINING, "ms", "baseline", 0)
    out.mkdir(parents=True)
    (out / layout.METRICS).write_text('{"params": {"skipped": "no score dumps"}}')
    (out / layout.NOISE_WINDOWS).write_text("dataset,indicator,target,step,step_to,auroc,ap,n,n_noisy\n")
    with caplog.at_level("INFO", logger="cmgh.report"):
        table = noise_over_training(tmp_path)
    assert table.empty and "no window scored" in caplog.text


def test_a_column_no_evaluation_reported_is_left_out(tmp_path: Path) -> None:
    """Results older than an indicator (here cos_all_parameters, absent from the fake metrics) get no empty column."""
    from cmgh.report.tables import ablation

    long = collect(fake_results(tmp_path))
    table = ablation(long)
    assert "AUROC cos_parameters mean" in table and "AUROC cos_all_parameters mean" not in table
    long.loc[long.metric == "auroc/cos_parameters/either", "metric"] = "auroc/cos_all_parameters/either"
    assert "AUROC cos_all_parameters mean" in ablation(long)


def test_the_summary_says_what_is_missing_against_the_config(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake_results(tmp_path)  # gcl has one MSR-VTT seed; the resolved config names seeds 0, 1
    layout.eval_metrics(tmp_path, "kinetics", "ms", "gr", 1).unlink()
    for seed in (0, 1, 2):
        layout.eval_metrics(tmp_path, "audioset", "ms", "gr_gcl", seed).unlink()
    with caplog.at_level(logging.WARNING):
        build_report(tmp_path)
    missing = (layout.tables_dir(tmp_path) / "summary.md").read_text().split("## Missing against the config")[1]
    for line in ("`ms/gr` kinetics: seeds 0, 2 of the config's 0, 1 (its means are over 2; missing 1).",  # seed 2: run beyond the config
                 "`ms/gcl` msrvtt: seeds 0 of the config's 0, 1 (its means are over 1; missing 1).",
                 "`ms/gr_gcl` has no audioset metrics (the config names the variant; other variants have them)."):
        assert line in missing and f"report: {line}" in caplog.text
    assert "baseline" not in missing
