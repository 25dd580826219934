"""What each stage depends on (cmgh.identity): one definition read by the runs' identities and guards
and by the workflow's rerun triggers (cmgh.plan.triggers), which must agree and must not drift:
a changed identity opens new tracked runs, a changed trigger reruns every job of its rule."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cmgh import config, identity
from cmgh.data.synth import generate as synth
from cmgh.evaluate import RUN_TASKS
from cmgh.io import json_digest
from cmgh.plan import Plan
from cmgh.plan.triggers import Triggers

REPO = Path(__file__).resolve().parents[1]


def config_file(name: str) -> Path:
    """A shipped config by name: `config` is the package's default, the others live in config/."""
    return config.DEFAULT_CONFIG if name == "config" else REPO / "config" / f"{name}.yaml"
DATASETS = ("howto100m", "kinetics", "audioset", "msrvtt", "youtube8m")


def identities(cfg: config.Config) -> dict[str, str]:
    """The digest of every run identity, resume fingerprint input and dataset stamp of a config."""
    out = {}
    for variant in cfg.variants:
        run_cfg = config.for_variant(cfg, variant)
        for stage in identity.RUN_STAGES:
            out[f"{variant}/{stage}"] = json_digest(identity.run_identity(run_cfg, stage), 12)
        out[f"{variant}/train"] = json_digest(identity.training_inputs(run_cfg), 16)
    for stage in ("evaluate", "sweep"):
        out[f"-/{stage}"] = json_digest(identity.run_identity(cfg, stage), 12)
    for name in DATASETS:
        out[f"synth/{name}"] = json_digest(synth.stamp_of(cfg, name), 12)
    return out


# Digests of identities() per shipped config, computed with the code before cmgh.identity existed
# (identities in cmgh.config, stamps in cmgh.data.synth): existing runs keep their keys and guards.
# The study's is its redesigned config's (issue 25 changed the study on purpose: 68c5a037e03731af before; issue 26
# added the rivals as variants: 78b9c89befda509d before, and without them it still is). The default config's
# is f3ce1573118715a5 with the 24-clip Kinetics validation split (issue 27 made it 96 clips, so that a sweep can
# rank trials: its synth and random-init evaluation triggers moved with it; its pre-training runs did not).
BEFORE = {"config": "aab8f2a24aa752aa", "study": "a2a7e96fdd55444f", "ablation": "09501ebf205c8b1e",
          "scaling": "76c62aa6664ede4a", "paper": "bf682cd6bddd5d9a"}


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_the_identities_of_the_shipped_configs_are_unchanged(name: str) -> None:
    found = identities(config.load(config_file(name)))
    assert hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()[:16] == BEFORE[name]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# The rerun triggers (params.slice) the workflow's rules recorded before cmgh.plan existed, as digests:
# outputs made then are not rerun.
TRIGGERS_BEFORE = {
    ("config", "pretrain", "baseline"): "b35dec6fdce5b1a2", ("config", "pretrain", "gr_gcl"): "d64e2701187cb28d",
    ("config", "evaluate", "baseline"): "bc04f9cb92e7b3cb", ("config", "evaluate", "gr"): "a059fd4ab485e389",
    ("config", "evaluate_random_init", ""): "0e0c6c415207e346", ("config", "run_evaluation", "gcl"): "aba96ecb16c7f9b0",
    ("config", "synth", "howto100m"): "0461e6a94eee8ad2", ("config", "synth", "kinetics"): "df8d98817cec0cc7",
    ("config", "extraction", "decoded"): "d864a2c342b0f640", ("config", "vocab", ""): "826f756bdbbc0138",
    ("config", "sweep", ""): "7ebe75e4f7868a3a",
    ("per_run", "evaluate", "baseline"): "361604a2cc6180e3", ("per_run", "evaluate_random_init", ""): "0e0c6c415207e346",
    ("paper", "download", "youtube8m"): "6c85a6f3084af4c7", ("paper", "extraction", "packed"): "cc186e48a0485659",
    ("paper", "evaluate", "gr_gcl_yt8m"): "1be129e9422a1466", ("paper", "pretrain", "baseline_yt8m"): "cd26611a34fa33fa",
    ("scaling", "synth", "youtube8m"): "3b984c1849eb3057",
}


def _triggers(name: str) -> Triggers:
    if name == "per_run":
        return Triggers(Plan(config.load(config.DEFAULT_CONFIG, ["evaluate.jobs=per_run"])))
    return Triggers(Plan(config.load(config_file(name))))


@pytest.mark.parametrize(("name", "rule", "arg"), sorted(TRIGGERS_BEFORE))
def test_the_rerun_triggers_are_unchanged(name: str, rule: str, arg: str) -> None:
    trigger = getattr(_triggers(name), rule)
    assert _digest(trigger(arg) if arg else trigger()) == TRIGGERS_BEFORE[(name, rule, arg)]


def _changes(*overrides: str) -> tuple[bool, bool, bool]:
    """Whether ``overrides`` change (the evaluation's rerun trigger, its tracking identity, the pre-training's trigger)."""
    before, after = config.load(), config.load(overrides=list(overrides))
    old, new = Triggers(Plan(before)), Triggers(Plan(after))
    return (old.evaluate("gr") != new.evaluate("gr"),
            identity.run_identity(config.for_variant(before, "gr"), "evaluate") != identity.run_identity(config.for_variant(after, "gr"), "evaluate"),
            old.pretrain("gr") != new.pretrain("gr"))


@pytest.mark.parametrize(("overrides", "expected"), [
    (("evaluate.probe_max_iter=50",), (True, True, False)),  # an evaluation setting: rerun and a new run
    (("pretrain.lr=0.002",), (True, True, True)),  # the encoder's training: everything downstream
    (("evaluate.noise_training.window=3",), (False, True, False)),  # a run task's own setting: its job only
    (("evaluate.jobs=per_run",), (True, True, False)),  # per run, the job's trigger carries the run task's settings too
    (("evaluate.random_init=false",), (False, True, False)),  # which evaluations run: no result (the key keeps it, as before)
    (("evaluate.tasks=[kinetics]",), (False, True, False)),
    (("pretrain.seeds=[3]",), (False, False, False)),  # another seed is another job, not another result
    (("pretrain.score_every=2",), (True, False, True)),  # what a run writes besides its model (the score dumps)
])
def test_a_trigger_and_an_identity_change_together_except_for_the_named_keys(overrides: tuple[str, ...], expected: tuple[bool, bool, bool]) -> None:
    assert _changes(*overrides) == expected


def test_the_evaluation_identity_is_the_trigger_section_plus_the_plan_and_run_task_keys() -> None:
    cfg = config.for_variant(config.load(), "gr")
    section = identity.run_identity(cfg, "evaluate")["evaluate"]
    trigger = identity.encoder_evaluation(cfg, RUN_TASKS)
    assert {k: v for k, v in section.items() if k in trigger} == trigger
    assert set(section) - set(trigger) == {*identity.EVALUATION_PLAN, *RUN_TASKS}
    assert identity.run_identity(cfg, "pretrain") == identity.training_inputs(cfg)


def test_a_generated_dataset_has_one_definition_for_its_stamp_and_its_trigger() -> None:
    cfg = config.load()
    triggers = Triggers(Plan(cfg))
    for name in DATASETS:
        stamp = synth.stamp_of(cfg, name)
        assert stamp.pop("generator_version") == synth.GENERATOR_VERSION
        assert json.loads(triggers.synth(name)) == stamp
    assert "noise" in synth.stamp_of(cfg, "howto100m") and "noise" not in synth.stamp_of(cfg, "kinetics")


# per later key: an override at its neutral value, and one away from it
LATER_KEY_OVERRIDES = {
    ("harmonize", "per_sample"): ("pretrain.harmonize.per_sample=batch_mixed", "pretrain.harmonize.per_sample=own"),
    ("harmonize", "granularity"): ("pretrain.harmonize.granularity=sample", "pretrain.harmonize.granularity=batch"),
    ("harmonize", "cagrad"): ("pretrain.harmonize.cagrad.c=0.5", "pretrain.harmonize.cagrad.c=0.9"),
    ("curriculum", "threshold"): ("pretrain.curriculum.threshold=0.0", "pretrain.curriculum.threshold=0.9"),
    ("curriculum", "flagged_weight"): ("pretrain.curriculum.flagged_weight=0.0", "pretrain.curriculum.flagged_weight=0.9"),
    ("curriculum", "quality_auroc"): ("pretrain.curriculum.quality_auroc=0.8", "pretrain.curriculum.quality_auroc=0.9"),
    ("curriculum", "quality_seed"): ("pretrain.curriculum.quality_seed=0", "pretrain.curriculum.quality_seed=7"),
    ("curriculum", "mixture"): ("pretrain.curriculum.mixture.window_steps=10", "pretrain.curriculum.mixture.window_steps=7"),
    ("curriculum", "coteaching"): ("pretrain.curriculum.coteaching.ramp_steps=100", "pretrain.curriculum.coteaching.ramp_steps=7"),
    ("balance",): ("pretrain.balance.method=sum", "pretrain.balance.method=famo"),
    ("compile_backend",): ("pretrain.compile_backend=inductor", "pretrain.compile_backend=aot_eager"),
}


def test_every_later_key_is_tested() -> None:
    assert set(LATER_KEY_OVERRIDES) == set(identity.LATER_KEYS)


@pytest.mark.parametrize("path", sorted(LATER_KEY_OVERRIDES))
def test_a_later_key_enters_the_identity_only_away_from_its_neutral_value(path: tuple[str, ...]) -> None:
    at, away = LATER_KEY_OVERRIDES[path]
    base = config.load(config.DEFAULT_CONFIG)
    at_neutral = config.load(config.DEFAULT_CONFIG, [at])
    moved = config.load(config.DEFAULT_CONFIG, [away])
    assert identity.training_inputs(at_neutral) == identity.training_inputs(base)
    assert identity.training_inputs(moved) != identity.training_inputs(base)
    node = identity.training_inputs(moved)["pretrain"]
    for part in path:
        node = node[part]  # present in the identity once moved
