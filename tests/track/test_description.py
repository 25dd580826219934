"""`cmgh report` makes the report's front page the MLflow experiment's description (the tag MLflow's
UI shows, Markdown): in a real sqlite store, only the experiment of the tree's own config, and never
a store or experiment created by asking."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmgh import config as config_mod
from cmgh import layout
from cmgh.report import build_report
from cmgh.track import open_tracker
from cmgh.track.description import RUNS_HEADING, describe
from tests.report.fake_results import fake_results

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_tracking_env")
DESCRIPTION = "mlflow.note.content"


def tracked_tree(root: Path) -> tuple[config_mod.Config, str]:
    """The fake results tree with a resolved config of its own (results and store under ``root``)."""
    fake_results(root)
    uri = f"sqlite:///{root / layout.MLFLOW_DB}"
    cfg = config_mod.with_overrides(config_mod.load(layout.resolved_config(root)), [f"paths.results={root}", f"tracking.uri={uri}"])
    layout.resolved_config(root).write_text(cfg.to_yaml(masked=False))
    return cfg, uri


def test_the_report_sets_the_experiment_description(tmp_path: Path) -> None:
    cfg, uri = tracked_tree(tmp_path)
    build_report(tmp_path)  # nothing tracked yet: no store is made by asking
    assert not (tmp_path / layout.MLFLOW_DB).exists()

    with open_tracker(cfg, "eval/a", {}, stage="evaluate", out=tmp_path / "a") as tracker:
        tracker.log_metrics({"top1": 50.0})
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(str(cfg.name))
    assert "group by `tags.variant`" in experiment.tags[DESCRIPTION] and "|" not in experiment.tags[DESCRIPTION]

    build_report(tmp_path)
    text = client.get_experiment(experiment.experiment_id).tags[DESCRIPTION]
    landing = layout.landing(tmp_path, "md").read_text()
    assert text.startswith(f"# cmgh results: {cfg.name}\n") and text.startswith(landing.rstrip())
    assert "| Kinetics top-1 | gr_gcl |" in text and f"`{tmp_path / layout.REPORT_HTML}`" in text
    assert text.split(f"{RUNS_HEADING}\n\n")[1].startswith(f"cmgh experiment `{cfg.name}`")  # then how the runs are organised


def test_another_trees_experiment_is_left_alone(tmp_path: Path) -> None:
    cfg, uri = tracked_tree(tmp_path / "tree")
    with open_tracker(cfg, "eval/a", {}, stage="evaluate", out=tmp_path / "a"):
        pass
    copy = tmp_path / "copy"  # the same tree moved: its config still names the first folder
    import shutil

    shutil.copytree(tmp_path / "tree", copy, ignore=shutil.ignore_patterns(layout.MLFLOW_DB + "*"))
    build_report(copy)
    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name(str(cfg.name))
    assert "| Kinetics top-1 |" not in experiment.tags[DESCRIPTION]
    assert describe(config_mod.with_overrides(cfg, ["tracking.enabled=false"]), "x") == "tracking.enabled is false"
    assert describe(config_mod.with_overrides(cfg, ["name=other"]), "x") == f"no experiment 'other' in {uri} (nothing tracked there yet)"
