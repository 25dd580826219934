"""Optuna sweeps on the tiny world: resumable sqlite studies, failed trials, MLflow nesting,
two workers on a real PostgreSQL server, and optuna-dashboard serving a study."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from cmgh import config as config_mod
from cmgh import layout, sweep
from cmgh.errors import ConfigError
from tests.helpers import REPO, free_port
from tests.sweep.sweep_cli import SPACE, sweep_overrides

@pytest.fixture(scope="module")
def sqlite_study(tiny_world: config_mod.Config, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """3 finished trials on sqlite (trial 0 forced to fail by an impossible config, trial 1 the baseline), then resumed to 4."""
    results = tmp_path_factory.mktemp("sweep") / "results"
    cfg = config_mod.load(overrides=sweep_overrides(tiny_world, results, "sweep.study=tiny"))
    # A real failure: 3 heads do not divide model.width 32 -> ConfigError inside the trial.
    sweep.open_study(cfg).enqueue_trial({"model.heads": 3})
    first = sweep.run_study(cfg, n_trials=3)
    snapshot = {"trials": [(t.number, t.state) for t in first.trials], "csv": (results / "sweep/tiny/trials.csv").read_text()}
    second = sweep.run_study(cfg, n_trials=4)
    return {"cfg": cfg, "results": results, "first": snapshot, "study": second}


@pytest.mark.slow
def test_sqlite_study_outputs_resume_and_failure(sqlite_study: dict) -> None:
    cfg, results, study = sqlite_study["cfg"], sqlite_study["results"], sqlite_study["study"]
    out = results / "sweep" / "tiny"
    first = sqlite_study["first"]["trials"]
    assert sum(state in sweep.FINISHED for _, state in first) == 3
    # the failing trial is recorded FAIL with its reason, and the study went on
    assert first[0][1] == TrialState.FAIL
    assert "model.heads" in study.trials[0].user_attrs["fail_reason"]
    # resumable: n_trials=4 adds exactly one finished trial
    finished = study.get_trials(states=sweep.FINISHED)
    assert len(finished) == 4
    assert len(study.trials) == len(first) + sum(1 for t in study.trials[len(first):] if t.state == TrialState.FAIL) + 1
    for name in ("trials.csv", "best_params.yaml", "tuned_variant.yaml", *(f"{p}.png" for p in layout.SWEEP_PLOTS)):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert "FAIL" in sqlite_study["first"]["csv"]
    assert study.metric_names == [str(cfg.sweep.objective)]  # optuna-dashboard names the metric, not "Objective 0"
    best = yaml.safe_load((out / "best_params.yaml").read_text())
    assert best["trial"] == study.best_trial.number and best["value"] == pytest.approx(study.best_value)
    assert set(best["params"]) == {"pretrain.lr", "pretrain.harmonize.rule", "model.heads"}
    # every trial pre-trained into its own folder; the objective is the val split's top-1
    metrics = json.loads((out / f"trial{study.best_trial.number}" / "eval" / "step000004" / "metrics.json").read_text())
    assert metrics["val_top1"] == pytest.approx(study.best_value)
    # the references: the baseline trial (base variant gr_gcl at its own values, queued after the failing one),
    # the validation split's resolution (4 clips: 25 points) and the random-init floor of the baseline's model
    baseline = [t for t in study.trials if t.user_attrs.get("reference") == "baseline"]
    assert [t.number for t in baseline] == [1] and baseline[0].state == TrialState.COMPLETE
    assert baseline[0].params == {"pretrain.lr": float(cfg.pretrain.lr), "pretrain.harmonize.rule": "cmgh", "model.heads": 4}
    assert study.user_attrs["validation_clips"] == 4 and study.user_attrs["validation_resolution"] == pytest.approx(25.0)
    assert all(t.user_attrs["validation_clips"] == 4 for t in study.get_trials(states=(TrialState.COMPLETE,)))
    floor = json.loads((out / "trial1" / "eval" / "random_init" / "metrics.json").read_text())
    assert floor["meta"]["random_init"] is True and study.user_attrs["random_init"] == pytest.approx(floor["val_top1"])
    assert best["baseline"] == {"trial": 1, "value": pytest.approx(baseline[0].value)} and best["random_init"] == pytest.approx(floor["val_top1"])
    beats = study.best_trial.number != 1 and study.best_value - baseline[0].value > 25.0
    assert best["tuned"] is beats and best["verdict"].startswith(f"best trial {study.best_trial.number}: kinetics_val_top1 ")
    if beats:  # the tuned variant feeds the config: base variant (gr_gcl) + best values
        tuned = sweep.tuned_variant(out / "best_params.yaml")
        assert tuned["pretrain"]["curriculum"]["rule"] == "cmgh"
        assert tuned["pretrain"]["lr"] == pytest.approx(best["params"]["pretrain.lr"])
        with_tuned = config_mod.with_overrides(cfg, [sweep.tuned_set_option(out / "best_params.yaml")])
        assert config_mod.for_variant(with_tuned, "tuned").pretrain.harmonize.rule == best["params"]["pretrain.harmonize.rule"]
        assert yaml.safe_load((out / "tuned_variant.yaml").read_text()) == {"variants": {"tuned": tuned}}
    else:  # tests/sweep/test_reference.py scripts both outcomes
        with pytest.raises(sweep.SweepError, match="no tuned variant: best trial"):
            sweep.tuned_variant(out / "best_params.yaml")
        assert yaml.safe_load((out / "tuned_variant.yaml").read_text()) == {"variants": {"tuned": f"no tuned variant: {best['verdict']}"}}


@pytest.mark.slow
def test_trials_are_nested_mlflow_runs(sqlite_study: dict) -> None:
    from mlflow.tracking import MlflowClient

    from cmgh.track import tracking_uri

    cfg, study = sqlite_study["cfg"], sqlite_study["study"]
    client = MlflowClient(tracking_uri=tracking_uri(cfg))
    exp = client.get_experiment_by_name(str(cfg.name))
    parents = client.search_runs([exp.experiment_id], "tags.`cmgh.run` = 'sweep/tiny'")
    assert len(parents) >= 1
    parent_ids = {p.info.run_id for p in parents}
    children = client.search_runs([exp.experiment_id], "tags.stage = 'sweep_trial'")
    assert children and all(c.data.tags.get("mlflow.parentRunId") in parent_ids for c in children)
    ran = {t.number for t in study.trials if t.state in sweep.FINISHED}
    assert {int(c.data.tags["trial"]) for c in children} >= ran
    assert any(k.startswith("sweep/") for c in children for k in c.data.metrics)
    assert [c.data.tags.get("reference") for c in children].count("baseline") >= 1
    assert {"validation_resolution", "random_init/kinetics_val_top1", "baseline/kinetics_val_top1"} <= set(parents[0].data.metrics)
    assert parents[0].data.tags["tuned"] in ("true", "false") and parents[0].data.tags["verdict"].startswith("best trial ")


def test_pruned_trial_stops_training_and_keeps_its_checkpoint(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    from cmgh import checkpoint as ckpt

    cfg = config_mod.load(overrides=sweep_overrides(tiny_world, tmp_path / "results", "sweep.study=prune", "tracking.enabled=false",
                                                    "sweep.space={pretrain.lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}}"))
    # Optuna's ThresholdPruner prunes any intermediate value below 1e9: the first report stops the trial.
    study = optuna.create_study(storage=sweep.make_storage(cfg), study_name="prune", direction="maximize",
                                pruner=optuna.pruners.ThresholdPruner(lower=1e9))
    study.optimize(sweep.Objective(cfg, "prune"), n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [2]
    run = tmp_path / "results" / "sweep" / "prune" / "trial0" / "pretrain"
    assert ckpt.load(run / "resume.pt")["step"] == 2  # the checkpoint of the pruned step is kept
    assert not (run / "summary.json").exists()


def test_space_keys_must_exist(tiny_config: config_mod.Config) -> None:
    cfg = config_mod.with_overrides(tiny_config, ["sweep.space={pretrain.harmonise.rule: {type: categorical, choices: [none]}}"])
    with pytest.raises(ConfigError, match=r"^sweep\.space\.pretrain\.harmonise\.rule: no such config key"):
        sweep.search_space(cfg)
    cfg = config_mod.with_overrides(tiny_config, ["sweep.space={pretrain.lr: {type: float, low: 0.1, high: 0.01}}"])
    with pytest.raises(ConfigError, match=r"^sweep\.space\.pretrain\.lr: low"):
        sweep.search_space(cfg)
    assert set(sweep.search_space(tiny_config)) >= {"pretrain.harmonize.rule", "pretrain.curriculum.end_keep", "pretrain.lr"}


def test_the_static_weight_baseline_is_a_sweep_of_vt_weight(tiny_config: config_mod.Config) -> None:
    """The unitary-scalarization rival: the plain sum on the baseline, its static weight lambda tuned by Optuna."""
    cfg = config_mod.with_overrides(tiny_config, ["sweep.base_variant=baseline",
                                                  "sweep.space={pretrain.vt_weight: {type: float, low: 0.25, high: 4.0, log: true}}"])
    params = sweep.suggest(optuna.trial.FixedTrial({"pretrain.vt_weight": 0.5}), sweep.search_space(cfg))
    trial = config_mod.for_variant(sweep.trial_config(cfg, params, "trial0"), "trial0").pretrain
    assert (trial.vt_weight, trial.harmonize.rule, trial.curriculum.rule, trial.balance.method) == (0.5, "none", "none", "sum")


@pytest.mark.slow
def test_dashboard_serves_the_study(sqlite_study: dict) -> None:
    exe = Path(sys.executable).with_name("optuna-dashboard")
    if not exe.exists():
        pytest.skip("optuna-dashboard is not installed in this environment")
    url = sweep.storage_url(sqlite_study["cfg"])
    port = free_port()
    proc = subprocess.Popen([str(exe), url, "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        payload = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and payload is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as resp:
                    assert resp.status == 200
                    payload = json.loads(resp.read())
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"optuna-dashboard exited: {proc.stderr.read().decode()[-500:]}")
                time.sleep(0.5)
        assert payload is not None, "optuna-dashboard did not answer within 60 s"
        studies = {s["study_name"]: s for s in payload["study_summaries"]}
        assert "tiny" in studies
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{studies['tiny']['study_id']}", timeout=10) as resp:
            detail = json.loads(resp.read())
        assert len(detail["trials"]) == len(sqlite_study["study"].trials)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (trust auth, user postgres); yields its URL."""
    bindir = _pg_bin()
    assert bindir is not None
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="cmgh-pg-"))  # not under pytest's 0700 tmp: the server user must reach it
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            owner = pwd.getpwnam("nobody")
        as_user = ["runuser", "-u", owner.pw_name, "--"]
        os.chmod(root, 0o755)
        os.chown(root, owner.pw_uid, owner.pw_gid)
    data, sock, logfile = root / "data", root / "sock", root / "server.log"
    port = free_port()
    env = {**os.environ, "LC_ALL": "C"}
    try:
        subprocess.run([*as_user, "mkdir", "-p", str(sock)], check=True)
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "-E", "UTF8"],
                       check=True, capture_output=True, env=env)
        opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(logfile), "-w", "-t", "60", "start"],
                       check=True, capture_output=True, env=env)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True, env=env)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.skipif(_pg_bin() is None, reason="PostgreSQL server binaries missing (apt-get install -y postgresql)")
def test_two_workers_share_a_postgres_study(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    pytest.importorskip("psycopg2", reason="psycopg2-binary (the dev extra) is needed for postgresql:// URLs")
    results = tmp_path / "results"
    valid_space = SPACE.replace("choices: [2, 3, 4]}", "choices: [2, 4]}")  # random failures would make the test flaky
    assert valid_space != SPACE
    sets = sweep_overrides(tiny_world, results, "tracking.enabled=false", "sweep.pruner=none", valid_space)
    with postgres_server() as url:
        cfg = config_mod.load(overrides=[*sets, f"sweep.storage={url}", "sweep.study=pg"])
        sweep.open_study(cfg).enqueue_trial({"model.heads": 3})  # outside the space: exactly one failed trial
        cmd = [sys.executable, "-m", "cmgh", "sweep", "--study", "pg", "--storage", url, "--threads", "1"]
        for item in sets:
            cmd += ["--set", item]
        procs = [
            subprocess.Popen([*cmd, "--worker-trials", str(k)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
            for k in (2, 3)
        ]
        outputs = [p.communicate(timeout=240)[0] for p in procs]
        for proc, text in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, text[-2000:]
        assert "optuna-dashboard postgresql://" in outputs[0]
        study = optuna.load_study(study_name="pg", storage=url)
        trials = study.get_trials()
        numbers = [t.number for t in trials]
        assert len(numbers) == len(set(numbers)) == max(numbers) + 1  # no duplicates, none lost
        finished = [t for t in trials if t.state in sweep.FINISHED]
        failed = [t for t in trials if t.state == TrialState.FAIL]
        assert len(finished) == 2 + 3  # every worker ran its own budget
        assert len(finished) + len(failed) == len(trials)  # nothing left RUNNING
        assert len({t.params["pretrain.lr"] for t in trials}) == len(trials)  # the workers did not propose the same trials
        assert len(failed) == 1 and "'3' not in (2, 4)" in failed[0].user_attrs.get("fail_reason", "")
        assert (results / "sweep" / "pg" / "best_params.yaml").is_file()
