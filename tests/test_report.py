"""`cmgh report` on a results folder built by real runs: 2 variants x 2 seeds (+ random init)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cmgh import config as config_mod
from cmgh.config import REPO_ROOT
from cmgh.errors import DataError
from cmgh.evaluate import TASKS
from cmgh.evaluate.run import evaluate
from cmgh.report import ABLATION_COLUMNS, _paired, _verdict, build_report, collect, summary
from cmgh.train.loop import RunSpec, pretrain

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
    return root


def test_collect_finds_every_run(results: Path) -> None:
    long = collect(results)
    runs = long[["task", "variant", "seed"]].drop_duplicates()
    assert len(runs) == len(TASKS) * 3 * 2
    assert set(long.variant) == {"random", "baseline", "gr_gcl"}
    assert {"top1", "mAP", "t2v_R@10", "auroc/cos_parameters/either"} <= set(long.metric)
    assert "meta" not in set(long.metric) and "params" not in set(long.metric)


def test_cli_report_writes_tables_figures_and_summary(results: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "cmgh", "report", "--results", str(results)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    tables, figures = results / "tables", results / "figures"
    for name in ("ablation.csv", "ablation.md", "ablation.tex", "summary.md", "metrics_long.csv", "metrics_wide.csv"):
        assert (tables / name).is_file(), name
    for stem in ("conflict_cosine_hist", "fractions", "noise_roc"):
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
    assert "Kinetics top-1" in text and "(n=2)" in text


def test_best_is_lowest_for_rank_metrics(results: Path) -> None:
    long = collect(results)
    from cmgh.report import _best_rows, ablation

    table = ablation(long)
    medr = next(c for c in ABLATION_COLUMNS if c.metric == "t2v_MedR")
    best = _best_rows(table, medr)
    values = table[f"{medr.label} mean"]
    assert {int(i) for i in best} == {i for i, v in enumerate(values) if v == values.min()}


def test_verdict_wording() -> None:
    long = pd.DataFrame(
        [{"task": "kinetics", "backbone": "ms", "variant": v, "seed": s, "metric": "top1", "value": x}
         for v, s, x in [("baseline", 0, 50.0), ("baseline", 1, 52.0), ("gr", 0, 53.0), ("gr", 1, 53.0), ("gcl", 0, 50.5), ("gcl", 1, 51.0)]]
    )
    col = next(c for c in ABLATION_COLUMNS if c.metric == "top1")
    gr = _paired(long, "ms", col, "gr", "baseline")
    assert gr is not None and math.isclose(gr[0], 2.0) and "better" in _verdict(col, gr)
    gcl = _paired(long, "ms", col, "gcl", "baseline")
    assert gcl is not None and "within noise" in _verdict(col, gcl)
    assert "**gr** vs baseline: +2.0 ± 1.4 Kinetics top-1 (n=2), better" in summary(long)


def test_empty_results_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no metrics.json found"):
        build_report(tmp_path)
    (tmp_path / "eval" / "kinetics" / "ms" / "baseline" / "seed0").mkdir(parents=True)
    (tmp_path / "eval" / "kinetics" / "ms" / "baseline" / "seed0" / "metrics.json").write_text("{broken")
    with pytest.raises(DataError, match="not a metrics file"):
        collect(tmp_path)


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
    proc = subprocess.run([sys.executable, "-m", "cmgh", "report", "--results", str(results), "--compare", str(other)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(results / "figures" / "noise_gain.csv")
    assert sorted(table["noise_rate"].unique()) == [0.3, 0.5]
    assert set(table["variant"]) == {"gr_gcl"} and set(table["task"]) == {"kinetics", "audioset", "msrvtt"}
    assert (results / "figures" / "noise_gain.png").stat().st_size > 1000
