"""The noise settings of an ablation or study (cmgh.ablation): which trees, their names and rates."""

from __future__ import annotations

import pytest

from cmgh import config as config_mod
from cmgh.ablation import MODALITIES, setting_of, settings
from cmgh.errors import DataError
from cmgh.evaluate import RUN_TASKS, TASKS, planned_tasks


def test_the_study_has_one_clean_tree_and_one_per_modality_and_rate() -> None:
    trees = settings([0.4, 0.0, 0.2], ["text", "audio"])
    assert [t.name for t in trees] == ["noise0", "text0.2", "text0.4", "audio0.2", "audio0.4"]
    assert [(t.audio_rate, t.text_rate) for t in trees] == [(0, 0), (0, 0.2), (0, 0.4), (0.2, 0), (0.4, 0)]
    assert [t.on("text") for t in trees] == [True, True, True, False, False]


def test_both_keeps_the_ablation_tree_names() -> None:
    assert [t.name for t in settings([0.0, 0.3, 0.5], ["both"])] == ["noise0", "noise0.3", "noise0.5"]
    assert [t.name for t in settings([0.5], ["both"])] == ["noise0.5"]  # no clean tree unless asked


def test_a_tree_setting_is_read_back_from_its_rates() -> None:
    for setting in settings([0.0, 0.3], MODALITIES):
        assert setting_of(setting.audio_rate, setting.text_rate) == setting
    with pytest.raises(DataError, match=r"^run/config.yaml: data.noise.audio_rate 0.1 and text_rate 0.3 differ and neither is 0"):
        setting_of(0.1, 0.3, "run/config.yaml")


def test_the_schema_names_the_modalities_and_tasks_of_the_code() -> None:
    assert tuple(config_mod.choices("ablation.modalities")) == MODALITIES
    assert tuple(config_mod.choices("evaluate.tasks")) == (*TASKS, *RUN_TASKS)


def test_evaluate_tasks_selects_what_the_workflow_plans() -> None:
    assert planned_tasks("synth", TASKS, ["msrvtt", "kinetics", "noise_training"]) == ("kinetics", "msrvtt")
    assert planned_tasks("synth", RUN_TASKS, ["noise_training"]) == RUN_TASKS
    assert planned_tasks("download", TASKS, ["noise", "audioset"]) == ("audioset",)  # no ground truth on real data
    assert planned_tasks("synth") == TASKS
