"""What the workflow computes for a config (cmgh.plan): the decisions that common.smk only turns into
paths and rules, tested here without a DAG run."""

from __future__ import annotations

from pathlib import Path

from cmgh import config, layout
from cmgh.evaluate import NOISE_TRAINING
from cmgh.plan import Plan
from cmgh.plan.triggers import Triggers
from cmgh.worlds import tree_config

REPO = Path(__file__).resolve().parents[2]


def config_file(name: str) -> Path:
    """A shipped config by name: `config` is the package's default, the others live in config/."""
    return config.DEFAULT_CONFIG if name == "config" else REPO / "config" / f"{name}.yaml"


def plan(*overrides: str, name: str = "config") -> Plan:
    return Plan(config.load(config_file(name), list(overrides)))


def test_the_grid_is_every_backbone_variant_and_seed() -> None:
    p = plan("model.backbones=[ms, ma]", "pretrain.seeds=[0, 4]")
    assert p.run_grid()[:3] == [("ms", "baseline", 0), ("ms", "baseline", 4), ("ms", "gr", 0)]
    assert len(p.run_grid()) == 2 * len(p.variants) * 2
    assert p.reference_variant == layout.BASELINE_VARIANT
    assert plan("variants={gr: {}, gcl: {}}").reference_variant == "gr"  # without a baseline: the first variant


def test_the_random_floor_is_evaluated_per_backbone_and_seed_unless_left_out() -> None:
    p = plan("pretrain.seeds=[0, 1]")
    randoms = [run for run in p.evaluation_runs() if run[1] == layout.RANDOM_VARIANT]
    assert randoms == [("ms", layout.RANDOM_VARIANT, 0), ("ms", layout.RANDOM_VARIANT, 1)]
    assert len(p.evaluations()) == len(p.planned_tasks) * (len(p.run_grid()) + 2)
    assert not any(v == layout.RANDOM_VARIANT for _, _, v, _ in plan("evaluate.random_init=false").evaluations())


def test_ground_truth_tasks_run_on_generated_data_only() -> None:
    assert plan().planned_tasks == ("kinetics", "audioset", "msrvtt", "noise") and plan().planned_run_tasks == (NOISE_TRAINING,)
    paper = plan(name="paper")
    assert paper.planned_tasks == ("kinetics", "audioset", "msrvtt") and paper.planned_run_tasks == ()
    assert paper.run_evaluations() == [] and paper.noise_training_figures() == []


def test_noise_over_training_needs_a_labelled_corpus() -> None:
    p = plan("variants={baseline: {}, av: {pretrain: {corpora: [{dataset: audioset}]}}, yt: {pretrain: {corpora: [{dataset: youtube8m}]}}}")
    assert [p.truth_corpora(v) for v in p.variants] == [("howto100m",), (), ("youtube8m",)]
    assert {v for _, v, _ in p.run_evaluations()} == {"baseline", "yt"}
    assert p.noise_training_figures() == [("ms", "baseline"), ("ms", "yt")]
    assert plan("evaluate.tasks=[kinetics]").truth_corpora("baseline") == ()


def test_a_per_run_job_scores_training_too_only_when_every_variant_has_a_labelled_corpus() -> None:
    per_task = plan()
    assert not per_task.per_run and not per_task.noise_training_in_run_job and per_task.run_job_tasks == per_task.planned_tasks
    assert per_task.evaluation_job(random_init=False) == "{task}/{backbone}/{variant}/seed{seed}"
    assert per_task.evaluation_job(random_init=True) == "{task}/{backbone}/random/seed{seed}"
    per_run = plan("evaluate.jobs=per_run")
    assert per_run.noise_training_in_run_job and per_run.run_job_tasks == (*per_run.planned_tasks, NOISE_TRAINING)
    assert per_run.evaluation_tasks(random_init=True) == per_run.planned_tasks  # a random encoder has no training to score
    assert per_run.evaluation_job(random_init=False) == "{backbone}/{variant}/seed{seed}"
    mixed = plan("evaluate.jobs=per_run", "variants={baseline: {}, av: {pretrain: {corpora: [{dataset: audioset}]}}}")
    assert not mixed.noise_training_in_run_job and mixed.run_job_tasks == mixed.planned_tasks  # its own job where there is a corpus


def test_features_are_decoded_for_evaluations_and_packed_or_decoded_for_pre_training() -> None:
    assert plan().decoded_datasets() == ["audioset", "howto100m", "kinetics", "msrvtt"]  # howto100m: the noise task's
    assert plan("evaluate.tasks=[kinetics]").decoded_datasets() == ["kinetics"]
    assert plan().corpora() == [("howto100m", "decoded")]
    packed = plan("features.format=packed", "pretrain.corpora=[{dataset: howto100m}, {dataset: audioset}]")
    assert packed.corpora() == [("howto100m", "packed"), ("audioset", "packed")] and packed.corpora("gr") == packed.corpora()


def test_scaling_pairs_come_from_variants_that_add_youtube8m() -> None:
    assert plan().scaling_pairs == []
    assert [(pair.method, pair.with_added) for pair in plan(name="scaling").scaling_pairs] == [
        ("baseline", "baseline_yt8m"), ("gr_gcl", "gr_gcl_yt8m"), ("small_loss", "small_loss_yt8m")]


def test_a_study_shares_its_trials_among_its_workers() -> None:
    assert plan().sweep_workers() == [] and plan().worker_trials == plan().cfg.sweep.n_trials
    p = plan("sweep.workers=3", "sweep.n_trials=10")
    assert p.sweep_workers() == [0, 1, 2] and p.worker_trials == 3
    assert p.sweep_task == "kinetics" and plan("sweep.objective=audioset_val_mAP").sweep_task == "audioset"


def test_a_noise_study_plans_one_world_per_setting() -> None:
    assert plan().worlds == []
    assert [w.name for w in plan(name="study").worlds] == ["noise0", "text0.6", "audio0.6"]
    assert [w.name for w in plan(name="ablation").worlds] == ["noise0", "noise0.3", "noise0.5"]


def test_a_noise_studys_worlds_share_the_sets_whose_generator_the_noise_does_not_reach() -> None:
    study = plan(name="study")
    root = config.resolve_path(study.cfg.worlds.root)
    assert study.shared.root == layout.shared_tree(root) == root / "shared"
    # generated once: what each synth job's rerun trigger says, the same in every world; decoded once: not tokenized
    # (MSR-VTT's ids come from each world's vocabulary, built from its own noisy captions)
    assert study.shared.data == ("kinetics", "audioset", "msrvtt", "youtube8m") and study.shared.features == ("kinetics", "audioset")
    triggers = [Triggers(Plan(config.from_dict(tree_config(study.cfg.to_dict(), w, root)))) for w in study.worlds]
    assert len({t.synth("kinetics") for t in triggers}) == 1 and len({t.synth("howto100m") for t in triggers}) == len(study.worlds)
    assert not plan().shared and not plan("worlds.noise_rates=[0.5]", "worlds.modalities=[text]", name="study").shared  # one tree: nothing to share
    assert not plan("data.source=download", name="study").shared
