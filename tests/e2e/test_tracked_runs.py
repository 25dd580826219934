"""The default DAG's MLflow store, read back as a user would: every run ended, every task's metrics
there (equal to the files the DAG wrote) and each task's headline on the pre-training runs too, system
metrics on the training runs, and `cmgh runs` giving the report's ablation table from the store alone."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from cmgh import config as config_mod
from cmgh import layout
from cmgh.evaluate import HEADLINE_METRICS, RUN_TASKS, planned_tasks
from cmgh.track import deferred, experiment_name
from cmgh.track.mlflow_tracker import metric_key
from tests.e2e.dag import REPO, TinyDag

SYSTEM_KEYS = {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"}


def store(tiny_dag: TinyDag) -> tuple[MlflowClient, list]:
    client = MlflowClient(tracking_uri=f"sqlite:///{tiny_dag.out / 'results' / layout.MLFLOW_DB}")
    experiment = client.get_experiment_by_name(experiment_name(config_mod.load([tiny_dag.configfile])))
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=10_000)
    return client, runs


def by_tags(runs: list, **tags: object) -> list:
    return [r for r in runs if all(r.data.tags.get(k) == str(v) for k, v in tags.items())]


@pytest.mark.slow
def test_no_run_left_running_and_every_tasks_metrics_are_in_the_store(tiny_dag: TinyDag) -> None:
    client, runs = store(tiny_dag)
    results = tiny_dag.out / "results"
    assert runs and [r.info.run_name for r in runs if r.info.status not in ("FINISHED", "KILLED")] == []

    pretrain_dirs = sorted(results.glob(layout.RUN_GLOB))
    assert len(pretrain_dirs) == 2
    for run_dir in pretrain_dirs:
        backbone, variant, seed = run_dir.parts[-3], run_dir.parts[-2], run_dir.name.removeprefix("seed")
        (run,) = by_tags(runs, stage="pretrain", backbone=backbone, variant=variant, seed=seed)
        assert run.info.status == "FINISHED"
        last = json.loads((run_dir / layout.TRAIN_LOG).read_text().splitlines()[-1])
        logged = {metric_key(k): float(v) for k, v in last.items() if isinstance(v, (int, float)) and k != "step" and math.isfinite(v)}
        assert logged and {k: run.data.metrics[k] for k in logged} == pytest.approx(logged)
        assert SYSTEM_KEYS <= set(run.data.metrics), run.data.metrics.keys()

    metric_files = sorted(results.glob(layout.eval_glob()))
    tasks = {*planned_tasks("synth"), *planned_tasks("synth", RUN_TASKS)}  # 4 tasks x 3 + noise over training x 2 runs
    assert {p.parts[-5] for p in metric_files} == tasks and len(metric_files) == 14
    for path in metric_files:
        task, backbone, variant, seed = path.parts[-5], path.parts[-4], path.parts[-3], path.parts[-2].removeprefix("seed")
        (run,) = by_tags(runs, stage="evaluate", task=task, backbone=backbone, variant=variant, seed=seed)
        written = json.loads(path.read_text())
        headline = {metric_key(f"{task}/{k}"): float(v) for k, v in written.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        assert run.info.status == "FINISHED" and headline, path
        assert {k: run.data.metrics.get(k) for k in headline} == pytest.approx(headline), path
        assert not any(k.startswith("system/") for k in run.data.metrics)  # evaluations do not sample
        assert run.data.tags["snakemake_rule"] in deferred.DEFER_RULES  # recorded by the job, logged by the workflow's one step

    # Each pre-training run carries its evaluations' headline metrics (what the runs table, Compare and group-by show);
    # the evaluation jobs' records were all logged by the workflow's track_evaluations step, none is left waiting.
    uri = f"sqlite:///{results / layout.MLFLOW_DB}"
    assert deferred.pending(uri) == [] and json.loads((results / layout.TRACKED_EVALUATIONS).read_text())["pending"] == 0
    for run_dir in pretrain_dirs:
        backbone, variant, seed = run_dir.parts[-3], run_dir.parts[-2], run_dir.name.removeprefix("seed")
        (run,) = by_tags(runs, stage="pretrain", backbone=backbone, variant=variant, seed=seed)
        headline = {metric_key(f"{task}/{metric}"): json.loads(layout.eval_metrics(results, task, backbone, variant, seed).read_text())[metric]
                    for task, metric in HEADLINE_METRICS.items()}
        assert {k: run.data.metrics.get(k) for k in headline} == pytest.approx(headline), run.info.run_name

    study = optuna.load_study(study_name="default", storage=f"sqlite:///{results / layout.OPTUNA_DB}")
    trials = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(trials) == 2
    objective = config_mod.load([tiny_dag.configfile]).sweep.objective
    for trial in trials:
        (run,) = by_tags(runs, stage="sweep_trial", trial=trial.number)
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, metric_key(f"sweep/{objective}"))}
        assert {s: history[s] for s in trial.intermediate_values} == pytest.approx(trial.intermediate_values)
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert run.info.status == "FINISHED" and history[max(history)] == pytest.approx(trial.value)
        assert SYSTEM_KEYS <= set(run.data.metrics)
    (parent,) = by_tags(runs, stage="sweep")
    assert parent.info.status == "FINISHED"


@pytest.mark.slow
def test_cmgh_runs_gives_the_reports_ablation_table_from_the_store(tiny_dag: TinyDag, tmp_path: Path) -> None:
    results = tiny_dag.out / "results"
    cmgh = [sys.executable, "-m", "cmgh", "runs", "--config", str(tiny_dag.configfile)]
    table = tmp_path / "from_store.csv"
    done = subprocess.run([*cmgh, "--out", str(table)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(table)
    expected, got = pd.read_csv(results / "tables" / "ablation.csv"), pd.read_csv(table)
    assert list(got.columns) == list(expected.columns) and list(got["variant"]) == ["random", "baseline", "gr_gcl"]
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-5)
    assert table.read_text() == (results / "tables" / "ablation.csv").read_text()

    # The default output is the report's Markdown table; an explicit store works the same way.
    shown = subprocess.run([*cmgh, "--tracking-uri", f"sqlite:///{results / layout.MLFLOW_DB}"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == (results / "tables" / "ablation.md").read_text()
