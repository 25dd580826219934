"""The one dotted-path walker: flatten / unflatten / get / set (overrides, sweeps, tracker params)."""

from __future__ import annotations

import pytest

from cmgh import config, keypaths
from cmgh.errors import ConfigError


def test_flatten_unflatten_round_trip() -> None:
    tree = {"a": {"b": 1, "c": [1, 2], "d": {"e": None, "f": {}}}, "g": "x"}
    flat = keypaths.flatten(tree, json_leaves=False)
    assert flat == {"a.b": 1, "a.c": [1, 2], "a.d.e": None, "a.d.f": {}, "g": "x"}
    assert keypaths.unflatten(flat) == tree
    whole = config.load().to_dict()
    del whole["sweep"]["space"]  # its keys are dotted paths themselves: the one part no dotted form can hold
    assert keypaths.unflatten(keypaths.flatten(whole, json_leaves=False)) == whole
    assert keypaths.flatten(tree)["a.c"] == "[1, 2]"  # the tracker form: lists as JSON


def test_get_and_set_by_dotted_path() -> None:
    tree = {"pretrain": {"lr": 0.1, "harmonize": {"rule": "cmgh"}}}
    assert keypaths.get_path(tree, "pretrain.harmonize.rule") == "cmgh"
    with pytest.raises(ConfigError, match=r"^pretrain\.harmonise\.rule: no such config key \('harmonise' is not under pretrain\)$"):
        keypaths.get_path(tree, "pretrain.harmonise.rule")
    with pytest.raises(ConfigError, match=r"'x' is not under pretrain\.lr"):
        keypaths.get_path(tree, "pretrain.lr.x")
    keypaths.set_path(tree, "pretrain.curriculum.rule", "none")
    assert tree["pretrain"]["curriculum"] == {"rule": "none"}
    with pytest.raises(ConfigError, match=r"^pretrain\.lr is not a mapping$"):
        keypaths.set_path(tree, ["pretrain", "lr", "x"], 1)


def test_override_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^--set name\.x=1: name is not a mapping$"):
        config.load(overrides=["name.x=1"])
