"""MLflow tracking of pre-training runs: real sqlite stores, a real `mlflow server`, a dead one."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from cmgh import cli
from cmgh import config as config_mod
from cmgh import identity, keypaths, layout
from cmgh.track import config_hash, open_tracker, tracking_uri
from cmgh.tracking import NullTracker, Tracker, file_hash
from cmgh.train.loop import RunSpec, load_metrics_log, pretrain
from tests.helpers import free_port, mlflow_store
from tests.track.tracked_runs import SMALL, cli_pretrain, config_file, runs_of

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

MLFLOW_BIN = Path(sys.executable).with_name("mlflow")

pytestmark = pytest.mark.usefixtures("no_tracking_env")


def steps_of(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_pretrain_run_is_tracked_resumed_and_not_duplicated(
    tiny_world: config_mod.Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = mlflow_store(tmp_path / "mlflow.db")
    cfg_file = config_file(tiny_world, tmp_path)
    store = [f"tracking.uri={uri}", f"tracking.artifacts={tmp_path / 'mlruns'}", "tracking.flush_every=4"]
    monkeypatch.setenv("CMGH_RULE", "pretrain")
    out = tmp_path / "gr"
    cli_pretrain(cfg_file, out, "gr", 0, *store)
    client = MlflowClient(tracking_uri=uri)

    (run,) = runs_of(client, tiny_world.name)
    data = run.data
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "pretrain/ms/gr/seed0"
    assert data.params["pretrain.steps"] == "6"
    assert data.params["model.width"] == "32"
    assert data.params["pretrain.harmonize.rule"] == "cmgh"  # the variant's resolved config
    assert data.params["pretrain.betas"] == "[0.9, 0.999]"
    assert len(data.params) == len(keypaths.flatten(config_mod.for_variant(tiny_world, "gr").to_dict()))
    train_log = load_metrics_log(out)
    for key in train_log.columns.drop("step"):
        assert steps_of(client, run.info.run_id, key) == list(range(6)), key
    loss = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss_va")}
    assert [loss[s] for s in range(6)] == pytest.approx(train_log["loss_va"].tolist())
    tags = data.tags
    assert (tags["backbone"], tags["variant"], tags["seed"], tags["stage"]) == ("ms", "gr", "0", "pretrain")
    assert tags["snakemake_rule"] == "pretrain"
    assert tags["noise_audio_rate"] == str(tiny_world.data.noise.audio_rate)
    assert tags["noise_text_rate"] == str(tiny_world.data.noise.text_rate)
    assert tags["manifest_sha256"] == file_hash(layout.feature_manifest(tiny_world.path("features"), "howto100m")) != "missing"
    assert tags["cmgh.run_key"].startswith("pretrain/ms/gr/seed0@")
    if shutil.which("git"):
        assert len(tags["git_commit"]) == 40 and tags["git_dirty"] in ("true", "false")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "train_log.jsonl", "summary.json", "scores", "conflict_hist.png"} <= artifacts
    scores = sorted(f"scores/{p.name}" for p in (out / "scores").glob("*.csv"))
    assert scores and [a.path for a in client.list_artifacts(run.info.run_id, "scores")] == scores
    logged_cfg = yaml.safe_load(Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path / "dl"))).read_text())
    assert logged_cfg["pretrain"]["harmonize"]["rule"] == "cmgh"

    # The same job again (finished): no second run, nothing logged twice, the run left as it was (its end time too).
    before = (out / "summary.json").stat().st_mtime_ns, (out / "checkpoint.pt").stat().st_mtime_ns
    cli_pretrain(cfg_file, out, "gr", 0, *store)
    (again,) = runs_of(client, tiny_world.name)
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert again.info.end_time == run.info.end_time
    assert ((out / "summary.json").stat().st_mtime_ns, (out / "checkpoint.pt").stat().st_mtime_ns) == before
    assert steps_of(client, run.info.run_id, "loss") == list(range(6))

    # Interrupted and resumed: the same run continues; steps redone after the last checkpoint
    # (here a "kill" after step 3 with the last checkpoint at step 2) are logged once.
    out = tmp_path / "baseline"
    cli_pretrain(cfg_file, out, "baseline", 1, *store, "--stop-after", "2")
    shutil.copy(out / "resume.pt", tmp_path / "checkpoint_step2.pt")
    cli_pretrain(cfg_file, out, "baseline", 1, *store, "--stop-after", "4")
    (partial,) = runs_of(client, tiny_world.name, "tags.variant = 'baseline'")
    assert partial.info.status == "KILLED"
    assert steps_of(client, partial.info.run_id, "loss") == [0, 1, 2, 3]
    shutil.copy(tmp_path / "checkpoint_step2.pt", out / "resume.pt")
    cli_pretrain(cfg_file, out, "baseline", 1, *store)
    (resumed,) = runs_of(client, tiny_world.name, "tags.variant = 'baseline'")
    assert resumed.info.run_id == partial.info.run_id and resumed.info.status == "FINISHED"
    assert steps_of(client, resumed.info.run_id, "loss") == list(range(6))
    assert len(runs_of(client, tiny_world.name)) == 2

    # A changed config is another run; --restart starts a fresh one.
    cli_pretrain(cfg_file, tmp_path / "lr", "gr", 0, *store, "pretrain.lr=2e-3")
    cli_pretrain(cfg_file, tmp_path / "gr2", "gr", 0, *store, "--restart")
    assert len(runs_of(client, tiny_world.name, "tags.variant = 'gr'")) == 3


def test_a_finished_run_is_never_reopened_by_another_out_folder(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    uri = mlflow_store(tmp_path / "mlflow.db")
    cfg_file = config_file(tiny_world, tmp_path)
    store = [f"tracking.uri={uri}", f"tracking.artifacts={tmp_path / 'mlruns'}"]
    first_out, second_out = tmp_path / "a", tmp_path / "b"
    cli_pretrain(cfg_file, first_out, "gr", 0, *store)
    client = MlflowClient(tracking_uri=uri)
    (first,) = runs_of(client, tiny_world.name)
    cli_pretrain(cfg_file, second_out, "gr", 0, *store)  # the same config, another folder: another run
    assert len(runs_of(client, tiny_world.name)) == 2
    kept = client.get_run(first.info.run_id)
    assert kept.info.status == "FINISHED" and kept.info.end_time == first.info.end_time
    assert kept.data.tags["out"] == str(first_out.resolve())
    (second,) = runs_of(client, tiny_world.name, f"tags.out = '{second_out.resolve()}'")
    assert second.info.run_id != first.info.run_id and second.info.status == "FINISHED"
    cli_pretrain(cfg_file, first_out, "gr", 0, *store)  # the same folder again: its own run, nothing added
    assert len(runs_of(client, tiny_world.name)) == 2
    assert steps_of(client, first.info.run_id, "loss") == list(range(6))

    # Evaluations of one checkpoint into two folders: two runs, each nested under the run of the checkpoint's folder.
    for name in ("e1", "e2"):
        args = ["evaluate", "--config", str(cfg_file), "--task", "msrvtt", "--checkpoint", str(first_out), "--out", str(tmp_path / name)]
        assert cli.main([*args, *(a for s in [*store, "evaluate.batch_size=8"] for a in ("--set", s))]) == 0
    evaluations = runs_of(client, tiny_world.name, "tags.stage = 'evaluate'")
    assert sorted(r.data.tags["out"] for r in evaluations) == [str((tmp_path / n).resolve()) for n in ("e1", "e2")]
    assert {r.data.tags["mlflow.parentRunId"] for r in evaluations} == {first.info.run_id}
    assert all(r.info.status == "FINISHED" for r in evaluations)


def test_tracker_config_handling(tiny_world: config_mod.Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config_mod.with_overrides(tiny_world, ["tracking.uri=sqlite:///results/x.db"])
    with monkeypatch.context() as here:  # a relative store hangs off the working directory (the project), not the package's folder
        here.chdir(tmp_path)
        assert tracking_uri(cfg) == f"sqlite:///{tmp_path / 'results' / 'x.db'}"
    assert tracking_uri(tiny_world) == f"sqlite:///{tiny_world.path('results') / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.invalid:1")
    assert tracking_uri(cfg) == "http://example.invalid:1"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    off = config_mod.with_overrides(tiny_world, ["tracking.enabled=false"])
    assert isinstance(open_tracker(off, "pretrain/ms/gr/seed0", {}, stage="pretrain", out=tmp_path / "off"), NullTracker)

    # Long values are cut to MLflow's limit; several trackers coexist on one store.
    uri = mlflow_store(tmp_path / "mlflow.db")
    cfg = config_mod.with_overrides(tiny_world, [f"tracking.uri={uri}", "tracking.experiment=unit", "name=a" + "b" * 20])
    with (
        open_tracker(cfg, "eval/a", {"variant": "x"}, stage="evaluate", out=tmp_path / "a") as a,
        open_tracker(cfg, "eval/b", {"variant": "y"}, nested_under="eval/a", stage="evaluate", out=tmp_path / "b") as b,
    ):
        assert isinstance(a, Tracker) and isinstance(b, Tracker)
        a.log_params({"long": "z" * 2000, "worlds.analysis.margins.t2v_R@10": 2.0})  # a key MLflow would refuse
        for step in range(3):
            a.log_metrics({"m": step}, step=step)
            b.log_metrics({"m": -step}, step=step)
        assert a.run_id != b.run_id
    client = MlflowClient(tracking_uri=uri)
    run_a, run_b = client.get_run(a.run_id), client.get_run(b.run_id)
    assert len(run_a.data.params["long"]) == 500 and run_a.data.params["name"] == "a" + "b" * 20
    assert run_a.data.params["worlds.analysis.margins.t2v_R10"] == "2.0"  # spelled as the metric is
    assert run_b.data.tags["mlflow.parentRunId"] == a.run_id
    assert [m.value for m in client.get_metric_history(b.run_id, "m")] == [0, -1, -2]
    assert run_a.info.status == run_b.info.status == "FINISHED" and run_a.data.tags["stage"] == "evaluate"

    # A block that raises ends its run FAILED (Ctrl-C: KILLED); an explicit close() wins over the exit.
    with pytest.raises(RuntimeError), open_tracker(cfg, "eval/c", {}, stage="evaluate", out=tmp_path / "c") as c:
        raise RuntimeError("boom")
    with pytest.raises(KeyboardInterrupt), open_tracker(cfg, "eval/d", {}, stage="evaluate", out=tmp_path / "d") as d:
        raise KeyboardInterrupt
    with open_tracker(cfg, "eval/e", {}, stage="evaluate", out=tmp_path / "e") as e:
        e.close("KILLED")
    assert [client.get_run(t.run_id).info.status for t in (c, d, e)] == ["FAILED", "KILLED", "KILLED"]


def test_metric_names_are_mlflows_and_a_failed_tracker_still_ends_its_run(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    from mlflow.utils.validation import _validate_metric_name

    from cmgh.evaluate.metrics import retrieval_metrics
    from cmgh.track.mlflow_tracker import TRACKING_ERROR_TAG, metric_key

    names = [f"msrvtt/t2v_{k}" for k in retrieval_metrics(torch.eye(4))] + ["a#b", "loss/va"]
    for name in names:
        _validate_metric_name(metric_key(name))  # MLflow's own rule (raises on a bad name)
    assert metric_key("msrvtt/t2v_R@10") == "msrvtt/t2v_R10" and metric_key("loss/va") == "loss/va"

    uri = mlflow_store(tmp_path / "mlflow.db")
    cfg = config_mod.with_overrides(tiny_world, [f"tracking.uri={uri}", "tracking.experiment=names"])
    with open_tracker(cfg, "eval/msrvtt", {}, stage="evaluate", out=tmp_path / "ok") as ok:
        ok.log_metrics({"msrvtt/t2v_R@1": 12.5, "msrvtt/t2v_MedR": 3.0})
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(ok.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics == {"msrvtt/t2v_R1": 12.5, "msrvtt/t2v_MedR": 3.0}

    # A store that fails mid-run (a value MLflow refuses): the run ends FAILED, saying what it lacks.
    with open_tracker(cfg, "eval/broken", {}, stage="evaluate", out=tmp_path / "broken") as broken:
        broken.log_params({"x": "1"})
        broken._call("log metrics", client.log_metric, broken.run_id, "bad@name", 1.0)
        assert not broken.active
    run = client.get_run(broken.run_id)
    assert run.info.status == "FAILED" and "failed to log metrics" in run.data.tags[TRACKING_ERROR_TAG]


def test_every_tracker_satisfies_the_protocol() -> None:
    from cmgh.sweep.seeds import SeedTracker
    from cmgh.tracking import RunContext
    from cmgh.track.mlflow_tracker import MlflowTracker

    assert isinstance(NullTracker(), Tracker)
    methods = [name for name, value in vars(Tracker).items() if callable(value) and not name.startswith("_")]
    assert set(methods) >= {"log_params", "log_metrics", "log_artifact", "log_text", "set_tags", "flush", "close", "log_datasets", "log_model"}
    trackers = set(RunContext.__subclasses__())
    assert trackers >= {NullTracker, MlflowTracker, SeedTracker}  # every implementation the package has
    for cls in trackers:
        missing = [name for name in [*methods, "__enter__", "__exit__"] if not callable(getattr(cls, name, None))]
        assert not missing, (cls.__name__, missing)
    with NullTracker() as tracker:
        tracker.log_metrics({"x": 1.0}, step=0)


def test_run_identity_decides_the_run_key(tiny_world: config_mod.Config) -> None:
    def hashes(*overrides: str) -> dict[str, str]:
        cfg = config_mod.for_variant(config_mod.with_overrides(tiny_world, list(overrides)), "gr")
        return {stage: config_hash(cfg, stage) for stage in identity.RUN_STAGES}

    base = hashes()
    assert len({base["pretrain"], base["evaluate"], base["sweep"]}) == 3  # one rule per stage
    assert base["sweep_trial"] == base["sweep"]  # a study and its trials share one rule (on their own configs)
    # what a pre-training run computes: its lr and its corpus, not its checkpoint cadence or seed list
    assert hashes("pretrain.checkpoint_every=3") == base
    assert hashes("pretrain.seeds=[5, 6]", "tracking.flush_every=2") == base
    assert hashes("pretrain.lr=2e-3")["pretrain"] != base["pretrain"]
    assert hashes("data.noise.audio_rate=0.1")["pretrain"] != base["pretrain"]
    # the evaluate section changes evaluations and trials, not pre-training
    changed = hashes("evaluate.probe_max_iter=7")
    assert changed["pretrain"] == base["pretrain"] and changed["evaluate"] != base["evaluate"] != changed["sweep_trial"]
    # a study's budget and storage change no trial; its objective does
    assert hashes("sweep.n_trials=99", "sweep.storage=sqlite:///x.db") == base
    assert hashes("sweep.objective=audioset_val_mAP")["sweep_trial"] != base["sweep_trial"]


def test_core_imports_without_mlflow() -> None:
    code = (
        "import sys; sys.modules['mlflow'] = None\n"
        "import cmgh.track, cmgh.tracking, cmgh.train.loop\n"
        "from cmgh import config\n"
        "t = cmgh.track.open_tracker(config.load(), 'pretrain/ms/gr/seed0', {}, stage='pretrain', out='run')\n"
        "assert isinstance(t, cmgh.tracking.NullTracker), t\n"
        "assert 'mlflow' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    cmd = [
        str(MLFLOW_BIN), "server",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", str(tmp_path / "server_artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log_file = open(tmp_path / "server.log", "w")  # noqa: SIM115
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-runner subprocess
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield url, proc
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # the server's own session: it and its workers
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=15)
                break
            except subprocess.TimeoutExpired:
                continue
        log_file.close()


def rest(url: str, endpoint: str, body: dict | None = None, **query: str) -> dict:
    target = f"{url}/api/2.0/mlflow/{endpoint}"
    if query:
        target += "?" + urllib.parse.urlencode(query)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(target, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_tracking_server_over_rest(
    tiny_world: config_mod.Config, tmp_path: Path, mlflow_server: tuple[str, subprocess.Popen], caplog: pytest.LogCaptureFixture
) -> None:
    url, proc = mlflow_server
    cfg = config_mod.with_overrides(tiny_world, [*SMALL, f"tracking.uri={url}"])
    run_cfg = config_mod.for_variant(cfg, "gr")
    tracker = open_tracker(run_cfg, "pretrain/ms/gr/seed0", {"backbone": "ms", "variant": "gr", "seed": 0}, stage="pretrain", out=tmp_path / "run")
    with tracker:
        checkpoint = pretrain(cfg, RunSpec("ms", "gr", 0, tmp_path / "run"), tracker=tracker)
        model_id = tracker.log_model(checkpoint, name="ms-gr-seed0", tags={"variant": "gr"}, params={"seed": 0})

    experiment = rest(url, "experiments/get-by-name", experiment_name=tiny_world.name)["experiment"]
    found = rest(url, "runs/search", {"experiment_ids": [experiment["experiment_id"]], "filter": "tags.variant = 'gr'"})
    (run,) = found["runs"]
    assert run["info"]["run_id"] == tracker.run_id and run["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["pretrain.harmonize.rule"] == "cmgh" and params["pretrain.steps"] == "6"
    history = rest(url, "metrics/get-history", run_id=tracker.run_id, metric_key="loss")["metrics"]
    assert sorted(m["step"] for m in history) == list(range(6))
    listed = rest(url, "artifacts/list", run_id=tracker.run_id)
    assert {"config.yaml", "train_log.jsonl", "summary.json"} <= {f["path"] for f in listed["files"]}
    assert [d["dataset"]["name"] for d in run["inputs"]["dataset_inputs"]] == ["howto100m"]
    model = MlflowClient(tracking_uri=url).get_logged_model(model_id)  # datasets and the logged model over REST too
    assert str(model.status) == "READY" and model.tags["cmgh.checkpoint"] == str(checkpoint.resolve())
    assert {m.key for m in model.metrics} >= {"loss", "loss_va"}

    # The server dies mid-run: a warning, the run goes on, nothing raised; closing does not wait
    # on the dead server (one more warning: the run cannot be ended there).
    live = open_tracker(run_cfg, "pretrain/ms/gr/seed1", {"variant": "gr"}, stage="pretrain", out=tmp_path / "live")
    live.log_metrics({"loss": 1.0}, step=0)
    live.flush()
    assert live.active
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=15)
    with caplog.at_level(logging.WARNING, logger="cmgh.track"):
        for step in range(1, 60):
            live.log_metrics({"loss": 1.0 / step}, step=step)
        live.log_artifact(tmp_path / "run" / "train_log.jsonl")
        live.close()
    assert not live.active
    warnings = [r for r in caplog.records if r.name == "cmgh.track" and r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "tracking is off" in warnings[0].getMessage() and "stays RUNNING" in warnings[1].getMessage()


def test_dead_tracking_server_does_not_break_training(
    tiny_world: config_mod.Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="cmgh.track"):
        cli_pretrain(config_file(tiny_world, tmp_path), tmp_path / "run", "gr", 0)
    assert time.monotonic() - started < 60
    assert len(load_metrics_log(tmp_path / "run")) == 6
    assert (tmp_path / "run" / "summary.json").is_file()
    warnings = [r for r in caplog.records if r.name == "cmgh.track" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no MLflow server answers" in warnings[0].getMessage()
