# Config validation and helpers shared by every rule (snakemake-workflow-template layout).
import json
import os
import re
import sys
from pathlib import Path

from snakemake.utils import validate

from cmgh import config as cmgh_config
from cmgh.errors import ConfigError


include: "commands.smk"


try:  # first our one-line message naming the key path, before any job starts
    CFG = cmgh_config.from_dict(config)
except ConfigError as exc:
    sys.exit(f"cmgh: config error: {exc}")
validate(config, schema="../schemas/config.schema.yaml", set_default=False)  # same schema, Snakemake's check

DATA = str(CFG.path("data"))
FEATURES = str(CFG.path("features"))
RESULTS = str(CFG.path("results"))
DATASETS = list(CFG.data.datasets)

# Rules read the resolved config from one file; it is rewritten only when its content changes,
# so its timestamp never triggers reruns (the per-rule `params` slices do that).
RESOLVED_CONFIG = f"{RESULTS}/config/resolved.yaml"
_text = CFG.to_yaml()
try:
    _old = open(RESOLVED_CONFIG, encoding="utf-8").read()
except OSError:
    _old = None
if _old != _text:
    from cmgh.io import atomic_write_text

    atomic_write_text(RESOLVED_CONFIG, _text)


def cfg_slice(*keys):
    """A JSON string of config sections: as a rule's params it reruns the rule when they change."""
    tree = CFG.to_dict()
    return json.dumps({k: tree[k] for k in keys}, sort_keys=True)


def cmgh_cmd(*args):
    """The cmgh CLI with the resolved config."""
    return cmgh_cli(*args, "--config", RESOLVED_CONFIG)


def variant_slice(variant):
    """What a variant's runs compute (cmgh.config.training_inputs) plus what they write besides the
    model (the score dumps): a changed knob reruns only its branch; another seed or the GPU count none."""
    run_cfg = cmgh_config.for_variant(CFG, variant)
    keys = {**cmgh_config.training_inputs(run_cfg), "score_every": run_cfg.pretrain.score_every}
    return json.dumps(keys, sort_keys=True)


def run_grid():
    """(backbone, variant, seed) of every pre-training run the config asks for."""
    return [(b, v, s) for b in CFG.model.backbones for v in CFG.variants for s in CFG.pretrain.seeds]


def pretrain_targets():
    return [f"{RESULTS}/pretrain/{b}/{v}/seed{s}/summary.json" for b, v, s in run_grid()]


TASKS = ("kinetics", "audioset", "msrvtt", "noise")
VARIANT_PATTERN = "|".join(re.escape(v) for v in CFG.variants)
# The random-init floor reuses a trained run's folder only for its config and seed.
REFERENCE_VARIANT = "baseline" if "baseline" in CFG.variants else next(iter(CFG.variants))


def evaluation_targets():
    runs = [(b, v, s) for b, v, s in run_grid()] + [(b, "random", s) for b in CFG.model.backbones for s in CFG.pretrain.seeds]
    return [f"{RESULTS}/eval/{t}/{b}/{v}/seed{s}/metrics.json" for t in TASKS for b, v, s in runs]


def all_targets():
    targets = [f"{FEATURES}/{name}/index.parquet" for name in DATASETS] + pretrain_targets() + [f"{RESULTS}/tables/ablation.md"]
    if CFG.sweep.run:
        targets.append(f"{RESULTS}/sweep/{CFG.sweep.study}/best_params.yaml")
    return targets
