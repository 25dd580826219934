"""System metrics of tracked training runs (cmgh.track.system): sampled into the run, stopped with it."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from cmgh import config as config_mod
from cmgh.track import open_tracker
from tests.helpers import mlflow_store

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

SAMPLER = "cmgh-system-metrics"


pytestmark = pytest.mark.usefixtures("no_tracking_env")


def samplers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == SAMPLER]


def tracked(cfg: config_mod.Config, tmp_path: Path, *overrides: str) -> tuple[config_mod.Config, MlflowClient]:
    uri = mlflow_store(tmp_path / "mlflow.db")
    cfg = config_mod.with_overrides(cfg, [f"tracking.uri={uri}", "tracking.system_metrics_interval_seconds=0.2", *overrides])
    return cfg, MlflowClient(tracking_uri=uri)


def system_keys(client: MlflowClient, run_id: str) -> set[str]:
    return {k for k in client.get_run(run_id).data.metrics if k.startswith("system/")}


def test_training_runs_sample_system_metrics_until_they_end_and_others_do_not(tiny_config: config_mod.Config, tmp_path: Path) -> None:
    cfg, client = tracked(tiny_config, tmp_path)
    with open_tracker(cfg, "pretrain/ms/baseline/seed0", {}, stage="pretrain", out=tmp_path / "run") as run:
        assert len(samplers()) == 1
        for step in range(4):
            run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
            time.sleep(0.25)
    assert samplers() == []
    record = client.get_run(run.run_id)
    assert record.info.status == "FINISHED" and record.data.metrics["loss"] == 0.25
    keys = system_keys(client, run.run_id)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes", "system/disk_usage_percentage"} <= keys
    steps = sorted(m.step for m in client.get_metric_history(run.run_id, "system/cpu_utilization_percentage"))
    assert len(steps) >= 3 and steps == list(range(len(steps)))  # every 0.2 s, plus one at the end

    # Resumed: the system/ steps go on after the ones the run holds.
    with open_tracker(cfg, "pretrain/ms/baseline/seed0", {}, stage="pretrain", out=tmp_path / "run") as again:
        assert again.run_id == run.run_id
    more = sorted(m.step for m in client.get_metric_history(run.run_id, "system/cpu_utilization_percentage"))
    assert more[: len(steps)] == steps and len(more) > len(steps) and more == list(range(len(more)))

    # A run shorter than the interval still gets its one sample; a failed run stops its sampler too.
    slow, _ = tracked(tiny_config, tmp_path, "tracking.system_metrics_interval_seconds=60")
    with pytest.raises(RuntimeError), open_tracker(slow, "sweep/s/trial0", {}, stage="sweep_trial", out=tmp_path / "trial") as trial:
        raise RuntimeError("the trial's training failed")
    assert samplers() == []
    assert client.get_run(trial.run_id).info.status == "FAILED"
    assert len(client.get_metric_history(trial.run_id, "system/cpu_utilization_percentage")) == 1

    # Evaluations do not sample; tracking.system_metrics=false turns it off.
    with open_tracker(cfg, "eval/kinetics/ms/baseline/seed0", {}, stage="evaluate", out=tmp_path / "eval") as ev:
        assert samplers() == []
    off, _ = tracked(tiny_config, tmp_path, "tracking.system_metrics=false")
    with open_tracker(off, "pretrain/ms/baseline/seed1", {}, stage="pretrain", out=tmp_path / "off") as plain:
        assert samplers() == []
        plain.log_metrics({"loss": 1.0}, step=0)
    assert system_keys(client, ev.run_id) == set() and system_keys(client, plain.run_id) == set()


def test_failing_system_metrics_never_fail_the_run(
    tiny_config: config_mod.Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from cmgh.track.mlflow_tracker import TRACKING_ERROR_TAG

    cfg, client = tracked(tiny_config, tmp_path)
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_NODE_ID", "node#0")  # system/node#0/...: a name MLflow refuses
    with caplog.at_level(logging.WARNING, logger="cmgh.track"), open_tracker(cfg, "pretrain/a", {}, stage="pretrain", out=tmp_path / "a") as run:
        for step in range(3):
            run.log_metrics({"loss": 1.0}, step=step)
            time.sleep(0.3)
    assert samplers() == []
    record = client.get_run(run.run_id)
    assert record.info.status == "FINISHED" and record.data.metrics == {"loss": 1.0}
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "cmgh.track"]
    assert warning.startswith("MLflow system metrics stopped: MlflowException")

    # The run's own store fails mid-run: the sampler stops at once, without another write.
    monkeypatch.delenv("MLFLOW_SYSTEM_METRICS_NODE_ID")
    with open_tracker(cfg, "pretrain/b", {}, stage="pretrain", out=tmp_path / "b") as broken:
        broken._call("log metrics", client.log_metric, broken.run_id, "bad@name", 1.0)
        assert not broken.active
        time.sleep(0.1)
        assert samplers() == []
    record = client.get_run(broken.run_id)
    assert record.info.status == "FAILED" and "failed to log metrics" in record.data.tags[TRACKING_ERROR_TAG]
