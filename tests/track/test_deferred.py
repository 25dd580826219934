"""The workflow's evaluations recorded without MLflow and logged in one step (cmgh.track.deferred), on
real sqlite stores: the store ends up holding what live tracking writes, each pre-training run carries
its evaluations' headline metrics, and `cmgh browse` links to a saved view that lists them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cmgh import cli
from cmgh import config as config_mod
from cmgh.evaluate import HEADLINE_METRICS
from cmgh.track import deferred, views
from cmgh.track.names import headline_keys
from cmgh.track.ui import browse
from tests.helpers import REPO, mlflow_store, untracked_env
from tests.track.test_lineage import inputs_of
from tests.track.tracked_runs import cli_pretrain, config_file, runs_of

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_tracking_env")
LIVE_ONLY_TAGS = {"out", "cmgh.run_key", "snakemake_rule"}  # where the run lives, and the workflow rule that ran it


def evaluate_args(cfg_file: Path, checkpoint: Path, out: Path, *sets: str) -> list[str]:
    args = ["evaluate", "--config", str(cfg_file), "--task", "kinetics", "--checkpoint", str(checkpoint), "--out", str(out)]
    return [*args, *(a for s in [*sets, "evaluate.batch_size=8"] for a in ("--set", s))]


def test_a_recorded_evaluation_is_logged_as_live_tracking_logs_it(tiny_world: config_mod.Config, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    uri = mlflow_store(tmp_path / "mlflow.db")
    store = [f"tracking.uri={uri}", f"tracking.artifacts={tmp_path / 'mlruns'}"]
    cfg_file = config_file(tiny_world, tmp_path)
    run_dir, live, later = tmp_path / "gr", tmp_path / "live", tmp_path / "later"
    cli_pretrain(cfg_file, run_dir, "gr", 0, *store)
    assert cli.main(evaluate_args(cfg_file, run_dir, live, *store)) == 0  # by hand: tracked live

    # A workflow evaluation job, in an interpreter where mlflow cannot even be imported: it only records.
    code = f"import sys; sys.modules['mlflow'] = None\nfrom cmgh import cli\nsys.exit(cli.main({evaluate_args(cfg_file, run_dir, later, *store)!r}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=untracked_env(CMGH_RULE="evaluate", OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = deferred.pending(uri)
    assert record.parent == tmp_path / "mlflow.db.pending"
    client = MlflowClient(tracking_uri=uri)
    assert len(runs_of(client, tiny_world.name, "tags.stage = 'evaluate'")) == 1  # not in the store yet
    synced_at = int(time.time() * 1000)
    assert deferred.sync(uri) == (1, 0) and deferred.pending(uri) == []

    # The same run as live tracking writes: tags, params, metrics, datasets, artifacts, parent, status.
    by_out = {r.data.tags["out"]: r for r in runs_of(client, tiny_world.name, "tags.stage = 'evaluate'")}
    a, b = by_out[str(live.resolve())], by_out[str(later.resolve())]
    (pretraining,) = runs_of(client, tiny_world.name, "tags.stage = 'pretrain'")
    assert b.info.run_name == a.info.run_name == "eval/kinetics/ms/gr/seed0" and b.info.status == a.info.status == "FINISHED"
    assert {k: v for k, v in b.data.tags.items() if k not in LIVE_ONLY_TAGS} == {k: v for k, v in a.data.tags.items() if k not in LIVE_ONLY_TAGS}
    assert b.data.tags["mlflow.parentRunId"] == pretraining.info.run_id and b.data.tags["snakemake_rule"] == "evaluate"
    assert b.data.params == a.data.params and len(b.data.params) > 100
    assert b.data.metrics == pytest.approx(a.data.metrics) and "kinetics/top1" in b.data.metrics
    assert inputs_of(b) == inputs_of(a) and len(inputs_of(b)) == 1
    assert [x.path for x in client.list_artifacts(b.info.run_id)] == [x.path for x in client.list_artifacts(a.info.run_id)] == ["config.yaml"]
    assert b.info.start_time <= b.info.end_time < synced_at  # the evaluation's own times, not the sync's
    history = client.get_metric_history(b.info.run_id, "kinetics/top1")
    assert [(m.step, m.timestamp <= b.info.end_time) for m in history] == [(0, True)]

    # Each evaluation's headline metric is on the pre-training run too (the newest evaluation's value).
    written = json.loads((later / "metrics.json").read_text())
    on_parent = client.get_run(pretraining.info.run_id).data.metrics
    assert on_parent["kinetics/top1"] == pytest.approx(written[HEADLINE_METRICS["kinetics"]])
    assert not {k for k in on_parent if k.startswith("kinetics/")} - {"kinetics/top1"}  # the headline only
    assert len(client.get_metric_history(pretraining.info.run_id, "kinetics/top1")) == 2  # live, then the record

    # The job again (a rerun): its record replaces the values in the same run, no second run.
    monkeypatch.setenv("CMGH_RULE", "evaluate")
    assert cli.main(evaluate_args(cfg_file, run_dir, later, *store)) == 0
    assert len(deferred.pending(uri)) == 1 and deferred.sync(uri) == (1, 0)
    assert len(runs_of(client, tiny_world.name, "tags.stage = 'evaluate'")) == 2
    assert [m.step for m in client.get_metric_history(pretraining.info.run_id, "kinetics/top1")] == [0, 0, 0]

    # The saved view: it selects the pre-training runs and shows each headline metric; `cmgh browse` links to it,
    # and saves it again on an experiment that lost it (tracked by an older cmgh).
    experiment = client.get_experiment_by_name(tiny_world.name)
    assert views.is_current(experiment.tags[views.VIEW_TAG])
    state = json.loads(json.loads(experiment.tags[views.VIEW_TAG])["state"])
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id], state["searchFilter"])] == [pretraining.info.run_id]
    assert {f"metrics.`{k}`" for k in headline_keys()} <= set(state["selectedColumns"])
    client.set_experiment_tag(experiment.experiment_id, views.VIEW_TAG, "{}")
    monkeypatch.delenv("CMGH_RULE")
    cfg = config_mod.with_overrides(tiny_world, store)
    command, link = browse(cfg, 5123)
    assert link.endswith(f"/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={views.VIEW_ID}")
    assert views.is_current(client.get_experiment(experiment.experiment_id).tags[views.VIEW_TAG])


def opened(name: str) -> dict[str, object]:
    """What open_tracker resolves for a run, at its smallest."""
    return {"experiment": "deferred", "run_key": f"{name}@k", "run_name": name, "tags": {"stage": "evaluate"}, "params": {"a": "1"},
            "artifact_location": None, "nested_under": None, "restart": False, "flush_every": 25, "system_metrics": None,
            "parent_metrics": []}


def test_sync_logs_records_oldest_first_keeps_what_the_store_refuses_and_sets_aside_damaged_ones(tmp_path: Path) -> None:
    uri = mlflow_store(tmp_path / "mlflow.db")
    spool = deferred.spool_dir(uri)
    assert spool == tmp_path / "mlflow.db.pending" and deferred.spool_dir("http://host:5000") is None
    for i, status in enumerate(("FINISHED", "FAILED")):
        tracker = deferred.DeferredTracker(spool, opened(f"eval/{i}"))
        tracker.log_metrics({"m": 1.0 + i, "not a number": "x"}, step=None)  # type: ignore[dict-item]
        tracker.log_metrics({"m": 5.0}, step=3)
        tracker.close(status)
        tracker.close()  # idempotent: one record
    (spool / "0000000000000-broken.json").write_text("{not json")

    # A store that cannot be opened (not a database): nothing logged, every record waits.
    broken = f"sqlite:///{tmp_path / 'broken.db'}"
    (tmp_path / "broken.db").write_text("not a database")
    (tmp_path / "broken.db.pending").mkdir()
    for path in spool.glob("*-*-*.json"):
        (tmp_path / "broken.db.pending" / path.name).write_bytes(path.read_bytes())
    assert deferred.sync(broken) == (0, 2) and len(deferred.pending(broken)) == 2

    # The real store: the damaged file set aside, both runs logged with their statuses, values and steps.
    marker, cfg_file = tmp_path / "tracked.json", tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump({"tracking": {"uri": uri}}))
    assert deferred.main(["--config", str(cfg_file), "--out", str(marker)]) == 0
    assert json.loads(marker.read_text()) == {"logged": 2, "pending": 0, "store": uri}
    assert deferred.pending(uri) == [] and [p.name for p in spool.glob("*.bad")] == ["0000000000000-broken.json.bad"]
    client = MlflowClient(tracking_uri=uri)
    runs = {r.info.run_name: r for r in runs_of(client, "deferred")}
    assert {name: r.info.status for name, r in runs.items()} == {"eval/0": "FINISHED", "eval/1": "FAILED"}
    assert [(m.step, m.value) for m in client.get_metric_history(runs["eval/1"].info.run_id, "m")] == [(0, 2.0), (3, 5.0)]
    assert runs["eval/0"].data.params == {"a": "1"} and runs["eval/0"].data.tags["cmgh.run_key"] == "eval/0@k"


def test_the_headline_metrics_are_the_reports() -> None:
    from cmgh.report.columns import HEADLINE

    assert {task: col.metric for task, col in HEADLINE.items()} == HEADLINE_METRICS
    assert headline_keys() == ["kinetics/top1", "audioset/mAP", "msrvtt/t2v_R10", "noise/auroc/cos_parameters/either"]


def test_the_saved_view_is_written_unless_a_user_changed_it() -> None:
    ours = views.saved_view(1000)
    assert views.is_current(ours) and not views.needs_saving(ours)
    assert all(views.needs_saving(value) for value in (None, "", "{}", "not json", "[1]"))  # no view there
    older = json.dumps({"name": views.VIEW_NAME, "createdAt": 5, "updatedAt": 5, "state": json.dumps({"searchFilter": ""})})
    assert views.needs_saving(older)  # cmgh's own, from another version: brought up to date
    changed = json.dumps({**json.loads(older), "updatedAt": 9})  # overwritten in the UI ("Overwrite view")
    renamed = json.dumps({**json.loads(ours), "name": "mine"})
    assert not views.needs_saving(changed) and not views.needs_saving(renamed)
