"""What `cmgh sweep` refuses before it spends a trial, and what it never writes: unsafe study
names, a study folder claimed by another storage, an empty study, a zero budget, an unwritable
journal, a search space outside the schema. Real CLI, real sqlite/journal storages."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from cmgh import config as config_mod
from cmgh import layout, sweep
from cmgh.errors import ConfigError, DataError
from cmgh.io import safe_id
from tests.helpers import tiny_overrides
from tests.sweep.sweep_cli import cli, one_line_error, sweep_overrides

LR_SPACE = "sweep.space={pretrain.lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}}"
QUIET = ["tracking.enabled=false", "sweep.max_failures=0"]


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# --------------------------------------------------------------------------- case 1: study names


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a..b"])
def test_study_name_that_is_not_a_safe_path_component_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    results = tmp_path / "results"
    code, _, err = cli(capsys, [*tiny_overrides(tmp_path), *QUIET, LR_SPACE], "--study", name, "--n-trials", "1")
    assert code == 2
    message = one_line_error(err)
    assert message.startswith(f"sweep.study: {name!r} is not of the expected form (Study name"), message
    assert "no '..'" in message and "(?!" not in message  # said in words, not as the schema's regex
    assert files_under(tmp_path) == []  # no storage, no trials.csv anywhere (results/trials.csv for '..')
    assert not (results / layout.TRIALS).exists()


def test_study_name_rule_is_the_safe_id_rule(tiny_config: config_mod.Config) -> None:
    """The schema's sweep.study pattern and cmgh.io.safe_id accept exactly the same names."""
    names = ["default", "v1.2", "a_b-c", "-x", "_x", "a=b", "x" * 200, "x" * 201, ".", "..", "a..b", ".h", "a/b", "a b", "", "é"]
    for name in names:
        try:
            safe_id(name)
            safe = True
        except DataError:
            safe = False
        try:
            config_mod.with_overrides(tiny_config, [f"sweep.study='{name}'"])
            valid = True
        except ConfigError:
            valid = False
        assert safe == valid, name
    with pytest.raises(ConfigError, match=r"^sweep\.study: '\.\.'"):
        sweep.open_study(tiny_config, "..")


# --------------------------------------------------------------------------- case 2: one study folder, one storage


def test_second_storage_for_a_study_is_refused_and_its_outputs_kept(tiny_world: config_mod.Config, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    sets = sweep_overrides(tiny_world, results, *QUIET, LR_SPACE)
    code, out, err = cli(capsys, sets, "--study", "s", "--n-trials", "1")
    assert code == 0, err
    folder = layout.study_dir(results, "s")
    record = yaml.safe_load((folder / layout.STUDY_RECORD).read_text())
    assert record == {"study": "s", "storage": f"sqlite:///{{paths.results}}/{layout.OPTUNA_DB}"}  # a results tree moves whole
    best = yaml.safe_load((folder / layout.BEST_PARAMS).read_text())
    assert best["storage"] == record["storage"]
    before = {p: p.read_bytes() for p in files_under(folder)}
    journal = tmp_path / "other" / "journal.log"
    code, _, err = cli(capsys, sets, "--study", "s", "--n-trials", "1", "--storage", f"journal:{journal}")
    assert code == 2
    message = one_line_error(err)
    assert str(folder) in message and record["storage"] in message and f"journal:{journal}" in message, message
    assert {p: p.read_bytes() for p in files_under(folder)} == before  # nothing truncated, nothing mixed in
    assert not journal.exists()  # refused before the other storage was touched
    dotted = f"sqlite:///{results}/../{results.name}/{layout.OPTUNA_DB}"  # the same file spelled through '..': the same storage
    code, _, err = cli(capsys, sets, "--study", "s", "--n-trials", "1", "--storage", dotted)
    assert code == 0, err
    # the same study in a results tree copied elsewhere is still its own storage's
    moved = tmp_path / "moved"
    shutil.copytree(results, moved)
    code, _, err = cli(capsys, sweep_overrides(tiny_world, moved, *QUIET, LR_SPACE), "--study", "s", "--n-trials", "1")
    assert code == 0, err
    # a password in the storage URL is masked in the refusal as in the record
    code, _, err = cli(capsys, sets, "--study", "s", "--storage", "postgresql://me:s3cret@127.0.0.1:9/db")
    assert code == 2 and "s3cret" not in err and "postgresql://me:***@127.0.0.1:9/db" in one_line_error(err)


def test_study_without_a_completed_trial_writes_no_outputs(tiny_config: config_mod.Config, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A study whose only finished trial was pruned has no best trial: no trials.csv, no best_params.yaml."""
    cfg = config_mod.with_overrides(tiny_config, [*QUIET, LR_SPACE, "sweep.study=pruned"])
    study = sweep.open_study(cfg)
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"pretrain.lr": 1e-3},
                                 distributions={"pretrain.lr": FloatDistribution(1e-4, 3e-3, log=True)}, intermediate_values={2: 0.1}))
    code, _, err = cli(capsys, [*tiny_overrides(tmp_path), *QUIET, LR_SPACE], "--study", "pruned", "--n-trials", "1")
    assert code == 2
    message = one_line_error(err)
    assert "pruned: no completed trial" in message and "1 pruned" in message, message
    folder = layout.study_dir(tmp_path / "results", "pruned")
    for name in (layout.TRIALS, layout.BEST_PARAMS, layout.TUNED_VARIANT, *(f"{p}.png" for p in layout.SWEEP_PLOTS)):
        assert not (folder / name).exists(), name


# --------------------------------------------------------------------------- case 3: budgets


def test_zero_trial_budget_is_refused(tiny_config: config_mod.Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config_mod.with_overrides(tiny_config, [*QUIET, LR_SPACE])
    with pytest.raises(ConfigError, match=r"^n_trials: 0 is below 1"):
        sweep.run_study(cfg, n_trials=0)
    with pytest.raises(ConfigError, match=r"^worker_trials: -1 is below 1"):
        sweep.run_study(cfg, worker_trials=-1)
    code, _, err = cli(capsys, [*tiny_overrides(tmp_path), *QUIET, LR_SPACE, "sweep.n_trials=0"])
    assert code == 2 and one_line_error(err).startswith("sweep.n_trials: 0 is less than the minimum of 1")
    assert files_under(tmp_path) == []  # no storage opened, no trials.csv of an empty study


# --------------------------------------------------------------------------- case 4: storage files


def test_journal_in_an_unwritable_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder\n")
    targets = [blocker / "journal.log"]  # fails for root too
    if os.geteuid() != 0:  # root ignores permissions
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
        targets.append(locked / "journal.log")
    for journal in targets:
        code, _, err = cli(capsys, [*tiny_overrides(tmp_path), *QUIET, LR_SPACE], "--study", "j", "--storage", f"journal:{journal}")
        assert code == 2
        message = one_line_error(err)
        assert message.startswith(f"sweep.storage: {journal} is not writable"), message
        assert not (tmp_path / "results").exists()  # nothing written before the storage opened
    code, _, err = cli(capsys, [*tiny_overrides(tmp_path), *QUIET, LR_SPACE], "--study", "j", "--storage", f"sqlite:///{blocker}/optuna.db")
    assert code == 2 and one_line_error(err).startswith(f"sweep.storage: {blocker}/optuna.db is not writable")


# --------------------------------------------------------------------------- case 5: the space against the schema


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ("{pretrain.harmonize.rule: {type: categorical, choices: [none, bogus]}}",
         "sweep.space.pretrain.harmonize.rule: choice 'bogus' is not one of none, cmgh, pcgrad, gradvac, cagrad, upgrad, norm_matched, random_partner"),
        ("{pretrain.curriculum.end_keep: {type: float, low: 0.5, high: 1.5}}",
         "sweep.space.pretrain.curriculum.end_keep: high 1.5 is outside the schema's range (1.5 is greater than the maximum of 1)"),
        ("{pretrain.lr: {type: float, low: -0.1, high: 0.1}}",
         "sweep.space.pretrain.lr: low -0.1 is outside the schema's range (-0.1 is less than or equal to the minimum of 0)"),
        ("{pretrain.curriculum.warmup_steps: {type: float, low: 0, high: 30}}",
         "sweep.space.pretrain.curriculum.warmup_steps: a float distribution samples non-integers, the key is an integer (use type: int)"),
        ("{pretrain.harmonize.project: {type: int, low: 0, high: 2}}",
         "sweep.space.pretrain.harmonize.project: the key takes one of both, vt, va (use type: categorical)"),
    ],
)
def test_space_outside_the_schema_is_refused_before_the_first_trial(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                    space: str, expected: str) -> None:
    code, _, err = cli(capsys, [*tiny_overrides(tmp_path), *QUIET, f"sweep.space={space}"], "--study", "bad", "--n-trials", "2")
    assert code == 2
    assert one_line_error(err) == expected
    assert files_under(tmp_path) == []  # no storage, no trial, no folder
    assert optuna.study.get_all_study_names(sweep.make_storage(config_mod.load(overrides=tiny_overrides(tmp_path)))) == []


def test_each_finished_trial_is_one_line_with_the_best_so_far() -> None:
    from cmgh.sweep.study import trial_line

    study = optuna.create_study(direction="maximize", study_name="s")
    study.set_user_attr("objective", "kinetics_val_top1")
    lr = {"pretrain.lr": FloatDistribution(1e-4, 3e-3, log=True)}
    for value in (60.0, 70.0):
        study.add_trial(create_trial(value=value, params={"pretrain.lr": 1e-3}, distributions=lr))
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"pretrain.lr": 2e-3}, distributions=lr, intermediate_values={2: 0.1}))
    trials = study.get_trials()
    assert trial_line(study, trials[0]) == "study s: trial 0 complete, kinetics_val_top1 60 (best 70, trial 1); 3 finished"
    assert trial_line(study, trials[2]) == "study s: trial 2 pruned, kinetics_val_top1 pruned (best 70, trial 1); 3 finished"
