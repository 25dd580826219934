"""The processes of a study (cmgh.sweep.workers): a trial killed with its process is failed and retried
on journal storage too, and processes sample distinct trials."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState

from cmgh import config as config_mod
from cmgh.sweep import open_study
from tests.helpers import REPO

KILLED = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from cmgh import config
from cmgh.sweep import open_study, workers
cfg = config.load(overrides={overrides!r})
study = open_study(cfg, "s")
trial = study.ask({{"lr": __import__("optuna").distributions.FloatDistribution(1e-4, 1e-2, log=True)}})
workers.mark(trial)
os.kill(os.getpid(), signal.SIGKILL)  # a kill -9 in the middle of the trial
"""


def _config(tmp_path: Path, storage: str) -> list[str]:
    return [f"paths.results={tmp_path / 'results'}", f"sweep.storage={storage}", "sweep.sampler=random", "sweep.max_retry=1"]


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_trial_killed_with_its_process_is_failed_and_retried(tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    storage = f"journal:{tmp_path / 'journal.log'}" if kind == "journal" else f"sqlite:///{tmp_path / 'o.db'}"
    overrides = _config(tmp_path, storage)
    killed = subprocess.run([sys.executable, "-c", KILLED.format(repo=str(REPO), overrides=overrides)], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    with caplog.at_level(logging.WARNING):
        study = open_study(config_mod.load(overrides=overrides), "s")
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]  # the dead one, and its retry with the same parameters
    assert trials[1].params == trials[0].params and trials[1].system_attrs["failed_trial"] == 0
    assert "trial 0 was left RUNNING by process" in caplog.text and "which is gone: failed, and retried" in caplog.text
    open_study(config_mod.load(overrides=overrides), "s")  # nothing left to reap: reopening changes nothing
    assert [t.state for t in study.get_trials(deepcopy=False)] == [TrialState.FAIL, TrialState.WAITING]


def test_a_resumed_or_concurrent_process_proposes_new_points(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from optuna.distributions import FloatDistribution

    cfg = config_mod.load(overrides=_config(tmp_path, f"journal:{tmp_path / 'journal.log'}"))
    space = {"lr": FloatDistribution(1e-4, 1e-2, log=True)}
    first = open_study(cfg, "s")
    a = first.ask(space)
    first.tell(a, 1.0)
    fresh = open_study(config_mod.load(overrides=_config(tmp_path / "other", f"journal:{tmp_path / 'other.log'}")), "s")
    assert fresh.ask(space).params == a.params  # a new study is reproducible from sweep.seed
    resumed = open_study(cfg, "s")
    b = resumed.ask(space)  # left RUNNING by this (live) process: the next opener runs concurrently
    assert b.params != a.params  # before: the same seed re-proposed the first point
    again = open_study(cfg, "s")
    assert again.ask(space).params != b.params  # not again the resumed one's point
    with caplog.at_level(logging.WARNING):
        open_study(cfg, "s")
    assert "another process is running trials: this one samples with its own seed" in caplog.text
