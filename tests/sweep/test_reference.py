"""A study's references on real sqlite studies: the validation resolution, the baseline trial, the
random-init floor, and the verdict that lets `cmgh sweep` call the best trial `tuned` only when it
beats the baseline by more than the resolution. The objective is scripted here (trial number ->
value, as the real one records the split's size); tests/sweep/test_sweep.py runs the real one."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from cmgh import config as config_mod
from cmgh import layout, sweep
from cmgh.errors import ConfigError
from cmgh.evaluate import VALIDATION_METRICS
from cmgh.sweep import reference, validation
from tests.helpers import tiny_overrides
from tests.sweep.sweep_cli import cli

SPACE = "sweep.space={pretrain.lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}, pretrain.harmonize.rule: {type: categorical, choices: [none, cmgh]}}"
QUIET = ["tracking.enabled=false", "sweep.max_failures=0", "sweep.pruner=none", SPACE]
CLIPS = 96
FLOOR = 62.5


def test_resolution_is_one_clip_of_the_validation_split(tmp_path: Path) -> None:
    assert sweep.resolution("kinetics_val_top1", 24) == pytest.approx(4.1667, abs=1e-4)  # the old default: one clip = 4.17 points
    assert sweep.resolution("kinetics_val_top1", 96) == pytest.approx(1.0417, abs=1e-4)
    assert sweep.resolution("audioset_val_mAP", 50) == pytest.approx(0.02)  # mAP is a fraction
    assert set(validation.UNIT) == set(VALIDATION_METRICS)  # every metric a study may optimize has its resolution
    (tmp_path / layout.METRICS).write_text(json.dumps({"val_top1": 50.0, "params": {"n_val": 24}}))
    assert validation.evaluation_clips(tmp_path) == 24
    assert validation.evaluation_clips(tmp_path / "missing") is None


def test_default_validation_split_ranks_trials() -> None:
    """The default world's Kinetics validation split resolves about one top-1 point."""
    kinetics = config_mod.load().data.synth.kinetics
    clips = int(kinetics.classes) * int(kinetics.val_per_class)
    assert clips >= 96 and sweep.resolution("kinetics_val_top1", clips) <= 1.05


def test_baseline_trial_takes_the_base_variants_own_values(tiny_config: config_mod.Config) -> None:
    cfg = config_mod.with_overrides(tiny_config, [SPACE])
    params, why = reference.baseline_params(cfg)
    assert why == "" and params == {"pretrain.lr": float(tiny_config.pretrain.lr), "pretrain.harmonize.rule": "cmgh"}  # gr_gcl
    cfg = config_mod.with_overrides(tiny_config, ["sweep.space={pretrain.harmonize.rule: {type: categorical, choices: [none, pcgrad]}}"])
    params, why = reference.baseline_params(cfg)
    assert params is None
    assert why.startswith("sweep.space.pretrain.harmonize.rule: the base variant's value 'cmgh' is not one of its choices"), why


class Scripted:
    """Stands in for :class:`cmgh.sweep.Objective`: samples like it, records the split like it, returns
    ``values[trial.number]``."""

    def __init__(self, values: list[float]) -> None:
        self.values = values

    def __call__(self, cfg: config_mod.Config, name: str) -> Callable[[optuna.Trial], float]:
        space = sweep.search_space(cfg)

        def objective(trial: optuna.Trial) -> float:
            sweep.suggest(trial, space)
            trial.set_user_attr(reference.CLIPS, CLIPS)
            trial.set_user_attr(reference.RESOLUTION, sweep.resolution(str(cfg.sweep.objective), CLIPS))
            return self.values[trial.number]

        return objective


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[float]], None]:
    """Script the trials' values; the floor's evaluation returns FLOOR (there is no checkpoint to evaluate)."""
    calls: list[Path] = []

    def floor(cfg: config_mod.Config, run_dir: Path, out: Path) -> float:
        calls.append(run_dir)
        return FLOOR

    monkeypatch.setattr(reference, "random_init_value", floor)

    def script(values: list[float]) -> None:
        monkeypatch.setattr("cmgh.sweep.study.Objective", Scripted(values))

    script.calls = calls  # type: ignore[attr-defined]
    return script


def run(capsys: pytest.CaptureFixture[str], tmp_path: Path, study: str, n_trials: int, *extra: str) -> tuple[str, Path]:
    code, out, err = cli(capsys, [*tiny_overrides(tmp_path), *QUIET, *extra], "--study", study, "--n-trials", str(n_trials))
    assert code == 0, err
    return out, layout.study_dir(tmp_path / "results", study)


def test_best_within_the_resolution_of_the_baseline_is_not_tuned(tiny_config: config_mod.Config, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
                                                                  scripted: Any) -> None:
    scripted([66.67, 60.0, 67.5])  # trial 2 is best by 0.83, below one clip of 96 (1.04 points)
    with caplog.at_level(logging.INFO, logger="cmgh.sweep.study"):
        out, folder = run(capsys, tmp_path, "flat", 3)
    lines = [r.getMessage() for r in caplog.records if r.name == "cmgh.sweep.study"]
    assert lines[0] == ("study flat: trial 0 (baseline) complete, kinetics_val_top1 66.67 (best 66.67, trial 0; baseline 66.67, trial 0; "
                        "random init 62.5; resolution 1.042, 96 clips); 1 finished")
    assert lines[2].startswith("study flat: trial 2 complete, kinetics_val_top1 67.5 (best 67.5, trial 2; baseline 66.67, trial 0;")
    assert len(scripted.calls) == 1 and scripted.calls[0] == layout.trial_pretrain_dir(tmp_path / "results", "flat", 0)  # once per study
    study = optuna.load_study(study_name="flat", storage=sweep.storage_url(tiny_config))
    assert study.trials[0].params == {"pretrain.lr": float(tiny_config.pretrain.lr), "pretrain.harmonize.rule": "cmgh"}
    assert study.user_attrs[reference.RANDOM_INIT] == FLOOR and study.user_attrs[reference.CLIPS] == CLIPS
    assert study.user_attrs[reference.RESOLUTION] == pytest.approx(100 / 96)
    line = ("best trial 2: kinetics_val_top1 67.5, baseline 66.67 (trial 0), random init 62.5: 0.83 better than the baseline, "
            "within the validation resolution 1.042 (96 clips); no tuned variant written")
    assert line in out.splitlines()
    assert "--set" not in out and "tuned variant:" not in out
    best = yaml.safe_load((folder / layout.BEST_PARAMS).read_text())
    assert best["tuned"] is False and best["verdict"] == line and best["trial"] == 2
    assert best["baseline"] == {"trial": 0, "value": 66.67} and best["random_init"] == FLOOR
    assert best["validation_resolution"] == pytest.approx(100 / 96) and best["validation_clips"] == CLIPS
    assert "user_attrs_validation_resolution" in (folder / layout.TRIALS).read_text().splitlines()[0]
    # tuned_variant.yaml exists (the Snakemake rule's output) but defines no variant, and says why wherever it is used
    assert yaml.safe_load((folder / layout.TUNED_VARIANT).read_text()) == {"variants": {"tuned": f"no tuned variant: {line}"}}
    with pytest.raises(sweep.SweepError, match=r"best_params\.yaml: no tuned variant: best trial 2: .* within the validation resolution"):
        sweep.tuned_variant(folder / layout.BEST_PARAMS)
    with pytest.raises(ConfigError) as stacked:
        config_mod.load([config_mod.DEFAULT_CONFIG, folder / layout.TUNED_VARIANT])
    message = str(stacked.value)
    assert message.startswith("variants.tuned: 'no tuned variant: best trial 2") and "\n" not in message, message


def test_best_beyond_the_resolution_of_the_baseline_is_tuned(tiny_config: config_mod.Config, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str], scripted: Any) -> None:
    scripted([66.67, 70.83, 50.0])
    out, folder = run(capsys, tmp_path, "win", 3)
    assert ("best trial 1: kinetics_val_top1 70.83, baseline 66.67 (trial 0), random init 62.5: 4.16 better than the baseline, "
            "beyond the validation resolution 1.042 (96 clips); tuned variant written") in out.splitlines()
    study = optuna.load_study(study_name="win", storage=sweep.storage_url(tiny_config))
    lr, rule = study.trials[1].params["pretrain.lr"], study.trials[1].params["pretrain.harmonize.rule"]
    assert f"tuned variant: --set '{sweep.tuned_set_option(folder / layout.BEST_PARAMS)}'" in out
    fragment = yaml.safe_load((folder / layout.TUNED_VARIANT).read_text())
    assert fragment["variants"]["tuned"]["pretrain"]["lr"] == pytest.approx(lr)
    assert fragment["variants"]["tuned"]["pretrain"]["curriculum"]["rule"] == "cmgh"  # on top of the base variant gr_gcl
    cfg = config_mod.load([config_mod.DEFAULT_CONFIG, folder / layout.TUNED_VARIANT])
    assert config_mod.for_variant(cfg, "tuned").pretrain.harmonize.rule == rule


def test_the_baseline_as_best_or_missing_is_not_tuned(tmp_path: Path, capsys: pytest.CaptureFixture[str], scripted: Any) -> None:
    scripted([70.0, 50.0])
    out, _ = run(capsys, tmp_path, "base", 2)
    assert ("best trial 0: kinetics_val_top1 70, baseline 70 (trial 0), random init 62.5: the best trial is the baseline "
            "(validation resolution 1.042); no tuned variant written") in out.splitlines()
    # a space the base variant's value is not in: no baseline trial, no floor, and the reason
    scripted([55.0, 90.0])
    no_cmgh = "sweep.space={pretrain.harmonize.rule: {type: categorical, choices: [none, pcgrad]}}"
    out, folder = run(capsys, tmp_path, "nobase", 2, no_cmgh)
    assert ("best trial 1: kinetics_val_top1 90, baseline unknown, random init unknown: no baseline trial (sweep.space.pretrain.harmonize.rule: "
            "the base variant's value 'cmgh' is not one of its choices, so no trial can be the baseline (add it to the choices)); "
            "no tuned variant written") in out.splitlines()
    assert "--set" not in out and yaml.safe_load((folder / layout.BEST_PARAMS).read_text())["baseline"] is None


def test_a_study_from_before_baselines_queues_one_within_its_budget(tiny_config: config_mod.Config, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str], scripted: Any) -> None:
    """Re-run with its spent budget, the study says its baseline waits; one more trial of budget runs it."""
    cfg = config_mod.with_overrides(tiny_config, [*QUIET, "sweep.study=old"])
    study = sweep.open_study(cfg)
    dists = {"pretrain.lr": FloatDistribution(1e-4, 3e-3, log=True), "pretrain.harmonize.rule": CategoricalDistribution(["none", "cmgh"])}
    for value, lr in ((60.0, 2e-4), (75.0, 2e-3)):
        study.add_trial(create_trial(value=value, params={"pretrain.lr": lr, "pretrain.harmonize.rule": "none"}, distributions=dists,
                                     user_attrs={reference.CLIPS: CLIPS, reference.RESOLUTION: 100 / CLIPS}))
    scripted([0.0, 0.0, 73.0])
    out, _ = run(capsys, tmp_path, "old", 2)
    assert ("best trial 1: kinetics_val_top1 75, baseline unknown (trial 2), random init unknown: the baseline trial 2 is queued, "
            "not run yet (raise the study's n_trials to run it); no tuned variant written") in out.splitlines()
    out, _ = run(capsys, tmp_path, "old", 3)
    study = optuna.load_study(study_name="old", storage=sweep.storage_url(cfg))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert study.trials[2].user_attrs[reference.REFERENCE] == reference.BASELINE
    assert "best trial 1: kinetics_val_top1 75, baseline 73 (trial 2), random init 62.5: 2 better than the baseline, beyond" in out


def test_verdict_follows_the_direction_and_a_failed_baseline(tiny_config: config_mod.Config) -> None:
    """Minimizing, the best must lie below the baseline by more than the resolution; a failed baseline decides nothing."""
    cfg = config_mod.with_overrides(tiny_config, [*QUIET, "sweep.direction=minimize", "sweep.study=low"])
    study = sweep.open_study(cfg)
    study.set_user_attr("objective", "kinetics_val_top1")
    study.set_user_attr(reference.CLIPS, 24)
    study.set_user_attr(reference.RESOLUTION, 100 / 24)
    dist = {"pretrain.lr": FloatDistribution(1e-4, 3e-3, log=True)}
    study.add_trial(create_trial(value=79.16666666666667, params={"pretrain.lr": 1e-3}, distributions=dist,
                                 user_attrs={reference.REFERENCE: reference.BASELINE}))
    study.add_trial(create_trial(value=76.0, params={"pretrain.lr": 2e-3}, distributions=dist))
    judged = sweep.verdict(study)
    assert not judged.tuned and ": 3.167 better than the baseline, within the validation resolution 4.167 (24 clips)" in judged.line
    study.add_trial(create_trial(value=75.0, params={"pretrain.lr": 2.5e-3}, distributions=dist))
    assert 79.16666666666667 - 75.0 > 100 / 24  # one clip better, plus a rounding error ...
    assert not sweep.verdict(study).tuned  # ... is not more than the resolution
    study.add_trial(create_trial(value=70.0, params={"pretrain.lr": 3e-3}, distributions=dist))
    assert sweep.verdict(study).tuned
    failed = sweep.open_study(config_mod.with_overrides(cfg, ["sweep.study=failed"]))
    failed.set_user_attr(reference.RESOLUTION, 1.0)
    failed.add_trial(create_trial(state=TrialState.FAIL, user_attrs={reference.REFERENCE: reference.BASELINE}))
    failed.add_trial(create_trial(value=99.0, params={"pretrain.lr": 2e-3}, distributions=dist))
    judged = sweep.verdict(failed)
    assert not judged.tuned and "the baseline trial 0 is fail, not complete" in judged.line


def test_only_the_creator_of_a_study_among_workers_queues_the_baseline(tiny_config: config_mod.Config, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str], scripted: Any) -> None:
    """Workers started together race to open the study: the storage makes one its creator, and only it queues the baseline."""
    from cmgh.sweep.storage import create_or_load

    cfg = config_mod.with_overrides(tiny_config, [*QUIET, "sweep.study=w"])
    first, created = create_or_load(cfg, worker=True)
    second, again = create_or_load(cfg, worker=True)
    assert (created, again) == (True, False) and first.study_name == second.study_name == "w"
    scripted([50.0, 60.0])
    code, _, err = cli(capsys, [*tiny_overrides(tmp_path), *QUIET], "--study", "w", "--worker-trials", "2")
    assert code == 0, err
    study = optuna.load_study(study_name="w", storage=sweep.storage_url(cfg))
    assert [t.user_attrs.get(reference.REFERENCE) for t in study.trials] == [None, None]  # a worker that did not create it queues none
    code, out, err = cli(capsys, [*tiny_overrides(tmp_path), *QUIET], "--study", "w", "--n-trials", "2")
    assert code == 0, err  # the top-up (no --worker-trials) finds none and queues it; the budget is spent, so it waits
    assert "the baseline trial 2 is queued, not run yet" in out
    assert sweep.open_study(cfg).trials[2].state == TrialState.WAITING
