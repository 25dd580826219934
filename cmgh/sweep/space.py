"""From the config to Optuna and back: the search space, one trial's sampled values, its config."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import optuna

from cmgh import config as config_mod
from cmgh import keypaths
from cmgh.config import Config
from cmgh.errors import ConfigError

UNTUNABLE = ("sweep", "variants", "paths", "tracking")  # sections that say how to run, not what


def search_space(cfg: Config) -> dict[str, dict[str, Any]]:
    """``sweep.space`` checked against the config: every key exists and every distribution is complete."""
    tree = cfg.to_dict()
    space = copy.deepcopy(tree["sweep"]["space"])
    if not space:
        raise ConfigError("sweep.space: empty (expected at least one config key -> distribution)")
    for key, dist in space.items():
        try:
            node = keypaths.get_path(tree, key)
        except ConfigError as exc:
            raise ConfigError(f"sweep.space.{exc}") from None
        if isinstance(node, dict):
            raise ConfigError(f"sweep.space.{key}: is a section, expected a single value")
        if key.split(".")[0] in UNTUNABLE:
            raise ConfigError(f"sweep.space.{key}: cannot tune the {key.split('.')[0]} section")
        kind = dist["type"]
        if kind == "categorical":
            if not dist.get("choices"):
                raise ConfigError(f"sweep.space.{key}: a categorical parameter needs choices")
        else:
            if "low" not in dist or "high" not in dist:
                raise ConfigError(f"sweep.space.{key}: a {kind} parameter needs low and high")
            if not dist["low"] < dist["high"]:
                raise ConfigError(f"sweep.space.{key}: low {dist['low']} is not below high {dist['high']}")
            if dist.get("log") and dist["low"] <= 0:
                raise ConfigError(f"sweep.space.{key}: log scale needs low > 0, got {dist['low']}")
    return space


def suggest(trial: optuna.Trial, space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One value per key of ``space`` (dotted config keys, also the Optuna parameter names)."""
    params: dict[str, Any] = {}
    for key, dist in space.items():
        kind = dist["type"]
        if kind == "categorical":
            params[key] = trial.suggest_categorical(key, list(dist["choices"]))
        elif kind == "int":
            params[key] = trial.suggest_int(key, int(dist["low"]), int(dist["high"]), step=int(dist.get("step") or 1), log=bool(dist.get("log", False)))
        else:
            params[key] = trial.suggest_float(key, float(dist["low"]), float(dist["high"]), step=dist.get("step"), log=bool(dist.get("log", False)))
    return params


def base_variant(cfg: Config) -> dict[str, Any]:
    variants = cfg.to_dict()["variants"]
    name = str(cfg.sweep.base_variant)
    if name not in variants:
        raise ConfigError(f"sweep.base_variant: {name!r} is not a variant (expected one of {', '.join(variants)})")
    return copy.deepcopy(variants[name])


def trial_config(cfg: Config, params: Mapping[str, Any], name: str) -> Config:
    """The config a trial trains with: variant ``name`` = base variant + sampled values, and the
    sweep's step budget (checkpoints every ``report_every`` steps, where the pruner looks)."""
    tree = cfg.to_dict()
    tree["pretrain"]["steps"] = int(cfg.sweep.steps)
    tree["pretrain"]["checkpoint_every"] = int(cfg.sweep.report_every)
    tree["variants"][name] = config_mod.deep_merge(base_variant(cfg), keypaths.unflatten(params))
    trial_cfg = config_mod.from_dict(tree)
    config_mod.for_variant(trial_cfg, name)  # an impossible combination fails here, naming the key
    return trial_cfg
