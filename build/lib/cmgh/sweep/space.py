"""From the config to Optuna and back: the search space, one trial's sampled values, its config."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import jsonschema
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
        check_against_schema(key, dist)
    return space


def key_schema(key: str) -> Mapping[str, Any] | None:
    """The schema of one dotted config key (None where the schema leaves it open)."""
    node: Any = config_mod.schema()
    for part in key.split("."):
        props = node.get("properties", {}) if isinstance(node, Mapping) else {}
        node = props.get(part, node.get("additionalProperties") if isinstance(node, Mapping) else None)
        if not isinstance(node, Mapping):
            return None
    return node


def check_against_schema(key: str, dist: Mapping[str, Any]) -> None:
    """Every value ``dist`` can sample is one the schema accepts for ``key``, checked once for the whole
    space so that no trial is spent on a value the config would refuse. The bounds of a range are its
    extremes; a float range on an integer key or a numeric range on an enum key is refused by kind.
    Constraints between keys (heads divide width) stay per trial: they depend on the other values."""
    node = key_schema(key)
    if node is None:
        return
    kind = dist["type"]
    if kind != "categorical" and "enum" in node:
        raise ConfigError(f"sweep.space.{key}: the key takes one of {', '.join(map(str, node['enum']))} (use type: categorical)")
    types = node.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    if kind == "float" and "integer" in types and "number" not in types:
        raise ConfigError(f"sweep.space.{key}: a float distribution samples non-integers, the key is an integer (use type: int)")
    if kind == "categorical":
        values = [(f"choice {c!r}", c) for c in dist["choices"]]
    else:
        cast = int if kind == "int" else float
        values = [(f"{end} {dist[end]}", cast(dist[end])) for end in ("low", "high")]
    validator = jsonschema.Draft202012Validator(node)
    for what, value in values:
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is None:
            continue
        if error.validator == "enum":
            raise ConfigError(f"sweep.space.{key}: {what} is not one of {', '.join(map(str, error.validator_value))}")
        if error.validator == "type":
            raise ConfigError(f"sweep.space.{key}: {what} is not of type {error.validator_value}")
        raise ConfigError(f"sweep.space.{key}: {what} is outside the schema's range ({error.message})")


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
