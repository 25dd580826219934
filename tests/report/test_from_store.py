"""`cmgh runs`: the report's ablation table from a real MLflow store, without the results folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cmgh import cli, layout
from cmgh import config as config_mod
from cmgh.io import atomic_write_json
from cmgh.report.collect import collect, variant_order
from cmgh.report.tables import ablation, ablation_csv, ablation_markdown
from cmgh.track import open_tracker
from tests.helpers import mlflow_store

pytest.importorskip("mlflow")

METRICS = {  # per task: metrics.json's top-level numbers (MSR-VTT's names are not MLflow's)
    "kinetics": lambda v, s: {"top1": 40.0 + 10 * v + s, "top5": 80.0 + v + 0.5 * s},
    "msrvtt": lambda v, s: {"t2v_R@1": 5.0 + v + s / 3, "t2v_R@10": 30.0 + 2 * v - s, "t2v_MedR": 9.0 - v},
}


pytestmark = pytest.mark.usefixtures("no_tracking_env")


def evaluate(cfg: config_mod.Config, results: Path, task: str, variant: str, seed: int, values: dict[str, float]) -> None:
    """What `cmgh evaluate` leaves: metrics.json, and the same numbers in a tracked evaluation run."""
    out = layout.eval_dir(results, task, "ms", variant, seed)
    atomic_write_json(out / layout.METRICS, {**values, "meta": {"task": task}, "params": {"n": 3}})
    tags = {"task": task, "backbone": "ms", "variant": variant, "seed": seed}
    with open_tracker(cfg, layout.eval_key(task, "ms", variant, seed), tags, stage="evaluate", out=out) as tracker:
        tracker.log_metrics({f"{task}/{k}": v for k, v in values.items()})


def test_runs_table_equals_the_reports_and_refuses_mixed_trees(tiny_config: config_mod.Config, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    uri = mlflow_store(tmp_path / "store" / "mlflow.db")
    cfg = config_mod.with_overrides(tiny_config, [f"tracking.uri={uri}", "tracking.experiment=runs"])
    results = cfg.path("results")
    variants = ["gr", "baseline", layout.RANDOM_VARIANT]
    for task, make in METRICS.items():
        for v, variant in enumerate(variants):
            for seed in (0, 1):
                evaluate(cfg, results, task, variant, seed, make(v, seed))
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    shutil.rmtree(results / "tables", ignore_errors=True)
    long = collect(results)
    expected = ablation(long, order=variant_order(long.variant.unique(), list(cfg.to_dict()["variants"])))

    out = tmp_path / "ablation.csv"
    assert cli.main(["runs", "--config", str(cfg_file), "--out", str(out)]) == 0
    assert out.read_text() == ablation_csv(expected)
    assert list(expected["variant"]) == ["random", "baseline", "gr"] and expected["MSR R@1 n"].tolist() == [2, 2, 2]
    capsys.readouterr()
    assert cli.main(["runs", "--config", str(cfg_file)]) == 0
    assert capsys.readouterr().out == ablation_markdown(expected)

    # The same evaluation tracked from a second tree: refused unless a filter picks one tree.
    evaluate(cfg, tmp_path / "other", "kinetics", "gr", 0, {"top1": 1.0, "top5": 2.0})
    assert cli.main(["runs", "--config", str(cfg_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cmgh: error: eval/kinetics/ms/gr/seed0 was tracked from two folders") and "--filter" in err and "\n" not in err
    picked = tmp_path / "picked.md"
    assert cli.main(["runs", "--config", str(cfg_file), "--filter", f"tags.out LIKE '{results}/%'", "--out", str(picked)]) == 0
    assert picked.read_text() == ablation_markdown(expected)

    # User errors: one line each, naming what was expected.
    for args, words in (
        (["--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"], "no tracking store there"),
        (["--set", "tracking.experiment=nope"], "no experiment 'nope'"),
        (["--filter", "tags.variant = 'absent'"], "has no finished evaluation run matching"),
        (["--out", str(tmp_path / "table.xlsx")], "expected a .csv or .md file"),
    ):
        assert cli.main(["runs", "--config", str(cfg_file), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err, err
    assert not (tmp_path / "none.db").exists()
