"""The generated worlds of a noise study (cmgh.worlds): which trees, their names, rates, configs and modules."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cmgh import config as config_mod
from cmgh.worlds import (MODALITIES, SHARED_MODULE, NoiseSetting, SharedSets, link_shared, module_name, modules_snakefile, setting_of, settings,
                         shared_config, tree_config)
from cmgh.plan import Plan
from cmgh.errors import ConfigError, DataError
from cmgh.evaluate import RUN_TASKS, TASKS, planned_tasks


def test_the_study_has_one_clean_tree_and_one_per_modality_and_rate() -> None:
    trees = settings([0.4, 0.0, 0.2], ["text", "audio"])
    assert [t.name for t in trees] == ["noise0", "text0.2", "text0.4", "audio0.2", "audio0.4"]
    assert [(t.audio_rate, t.text_rate) for t in trees] == [(0, 0), (0, 0.2), (0, 0.4), (0.2, 0), (0.4, 0)]
    assert [t.on("text") for t in trees] == [True, True, True, False, False]


def test_both_keeps_the_noise_tree_names() -> None:
    assert [t.name for t in settings([0.0, 0.3, 0.5], ["both"])] == ["noise0", "noise0.3", "noise0.5"]
    assert [t.name for t in settings([0.5], ["both"])] == ["noise0.5"]  # no clean tree unless asked


def test_a_tree_setting_is_read_back_from_its_rates() -> None:
    for setting in settings([0.0, 0.3], MODALITIES):
        assert setting_of(setting.audio_rate, setting.text_rate) == setting
    with pytest.raises(DataError, match=r"^run/config.yaml: data.noise.audio_rate 0.1 and text_rate 0.3 differ and neither is 0"):
        setting_of(0.1, 0.3, "run/config.yaml")


def test_the_schema_names_the_modalities_and_tasks_of_the_code() -> None:
    assert tuple(config_mod.choices("worlds.modalities")) == MODALITIES
    assert tuple(config_mod.choices("evaluate.tasks")) == (*TASKS, *RUN_TASKS)


def test_evaluate_tasks_selects_what_the_workflow_plans() -> None:
    assert planned_tasks("synth", TASKS, ["msrvtt", "kinetics", "noise_training"]) == ("kinetics", "msrvtt")
    assert planned_tasks("synth", RUN_TASKS, ["noise_training"]) == RUN_TASKS
    assert planned_tasks("download", TASKS, ["noise", "audioset"]) == ("audioset",)  # no ground truth on real data
    assert planned_tasks("synth") == TASKS


def test_a_world_config_has_its_own_tree_rates_and_one_shared_store(tmp_path: Path) -> None:
    cfg = config_mod.load(overrides=["worlds.noise_rates=[0.0, 0.4]", "worlds.modalities=[text]"])
    tree = tree_config(cfg.to_dict(), NoiseSetting("text", 0.4), tmp_path)
    assert tree["worlds"]["noise_rates"] == [] and tree["data"]["noise"]["text_rate"] == 0.4 and tree["data"]["noise"]["audio_rate"] == 0.0
    assert tree["paths"] == {"data": str(tmp_path / "text0.4" / "data"), "features": str(tmp_path / "text0.4" / "features"), "results": str(tmp_path / "text0.4")}
    assert tree["tracking"]["uri"] == f"sqlite:///{tmp_path / 'mlflow.db'}" and tree["tracking"]["artifacts"] == str(tmp_path / "mlruns")
    assert cfg.to_dict()["worlds"]["noise_rates"] == [0.0, 0.4]  # the study's config is left as it was
    config_mod.from_dict(tree)  # a valid config of its own
    kept = tree_config(config_mod.load(overrides=["tracking.uri=sqlite:///elsewhere.db"]).to_dict(), NoiseSetting("both", 0.0), tmp_path)
    assert kept["tracking"]["uri"] == "sqlite:///elsewhere.db"


def test_a_world_may_run_fewer_variants(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    variants = "variants={baseline: {}, gr: {pretrain: {harmonize: {rule: cmgh}}}, gcl: {pretrain: {curriculum: {rule: cmgh}}}}"
    study = ["worlds.noise_rates=[0.0, 0.6]", "worlds.modalities=[text, audio]", variants]
    cfg = config_mod.load(overrides=[*study, "worlds.variants={noise0: [baseline], audio0.6: [baseline, gcl]}"])
    ran = {s.name: list(tree_config(cfg.to_dict(), s, tmp_path)["variants"]) for s in settings([0.0, 0.6], ["text", "audio"])}
    assert ran == {"noise0": ["baseline"], "text0.6": ["baseline", "gr", "gcl"], "audio0.6": ["baseline", "gcl"]}
    assert tree_config(cfg.to_dict(), NoiseSetting("text", 0.6), tmp_path)["worlds"]["variants"] == {}  # a tree runs what it holds
    assert list(tree_config(config_mod.load(overrides=study).to_dict(), NoiseSetting("both", 0.0), tmp_path)["variants"]) == ["baseline", "gr", "gcl"]
    for value, message in [("{noise0: [baseline, grr]}", r"worlds.variants.noise0: 'grr' not defined \(expected names of variants: baseline, gr, gcl\)"),
                           ("{noise0: [gr]}", r"worlds.variants.noise0: expected 'baseline' among them")]:
        with pytest.raises(ConfigError, match=f"^{message}"):
            Plan(config_mod.load(overrides=[*study, f"worlds.variants={value}"]))
    with caplog.at_level(logging.WARNING):  # a study overridden to other rates keeps its lists: said, not refused
        Plan(config_mod.load(overrides=[*study, "worlds.variants={text0.3: [baseline]}"]))
    assert "worlds.variants: 'text0.3' is not a world of this study (its worlds: noise0, text0.6, audio0.6): its list is not used" in caplog.text


def test_each_world_is_a_module_of_the_root_snakefile() -> None:
    worlds = settings([0.0, 0.25], ["audio"])
    assert [module_name(w) for w in worlds] == ["noise0", "audio0_25"]
    text = modules_snakefile(worlds, "../../Snakefile", "tree_config")
    assert "module audio0_25:\n    snakefile: '../../Snakefile'\n    config: tree_config('audio', 0.25)\n" in text
    assert "use rule * from noise0 as noise0_*\n" in text and text.endswith("\n") and not text.endswith("\n\n")


def test_the_shared_tree_is_a_module_before_the_worlds_with_the_clean_settings_paths(tmp_path: Path) -> None:
    text = modules_snakefile(settings([0.0, 0.5], ["text"]), "../../Snakefile", "tree_config", "shared_config")
    assert text.index(f"module {SHARED_MODULE}:\n    snakefile: '../../Snakefile'\n    config: shared_config()\n") < text.index("module noise0:")
    assert f"use rule * from {SHARED_MODULE} as {SHARED_MODULE}_*\n" in text
    cfg = config_mod.load(overrides=["worlds.noise_rates=[0.0, 0.5]", "worlds.modalities=[text]"])
    tree = shared_config(cfg.to_dict(), tmp_path)
    assert tree["paths"] == {"data": str(tmp_path / "shared" / "data"), "features": str(tmp_path / "shared" / "features"), "results": str(tmp_path / "shared")}
    assert tree["data"]["noise"]["text_rate"] == tree["data"]["noise"]["audio_rate"] == 0.0
    config_mod.from_dict(tree)


def test_a_world_links_the_shared_sets_relatively_once_and_refuses_its_own_copy(tmp_path: Path) -> None:
    shared = SharedSets(tmp_path / "shared", ("kinetics", "msrvtt"), ("kinetics",))
    assert SharedSets.from_dict(shared.to_dict()) == shared and not SharedSets(tmp_path)
    world = tmp_path / "text0.6"
    links = shared.links(world / "data", world / "features")
    assert links == [(world / "data" / "kinetics", tmp_path / "shared" / "data" / "kinetics"),
                     (world / "data" / "msrvtt", tmp_path / "shared" / "data" / "msrvtt"),
                     (world / "features" / "kinetics", tmp_path / "shared" / "features" / "kinetics")]
    link_shared(links)
    link_shared(links)  # again: nothing to do
    assert (world / "data" / "kinetics").readlink() == Path("..", "..", "shared", "data", "kinetics")
    (tmp_path / "shared" / "features" / "kinetics").mkdir(parents=True)
    (tmp_path / "shared" / "features" / "kinetics" / "index.parquet").write_text("x")
    assert (world / "features" / "kinetics" / "index.parquet").read_text() == "x"  # read through the link
    own = SharedSets(tmp_path / "shared", ("audioset",))
    (world / "data" / "audioset").mkdir()
    with pytest.raises(DataError, match=r"data/audioset: a world's own copy where the workflow links the shared .*; remove it"):
        link_shared(own.links(world / "data", world / "features"))
