"""Dotted key paths (``pretrain.harmonize.rule``) of nested config trees: the one walker that
overrides set by, sweeps sample and rebuild by, and trackers log params by.

Import-free apart from the error type, so the config loader and its users share it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from cmgh.errors import ConfigError


def flatten(tree: Mapping[str, Any], prefix: str = "", *, json_leaves: bool = True) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``. With ``json_leaves`` (for trackers and tables) lists and
    empty mappings become JSON strings; without it they stay as they are, so :func:`unflatten` inverts it."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}.", json_leaves=json_leaves))
        elif json_leaves and isinstance(value, (list, tuple, Mapping)):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``: the inverse of ``flatten(..., json_leaves=False)`` for
    trees whose keys hold no dot (``sweep.space``'s keys are dotted paths themselves)."""
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        set_path(tree, dotted, value)
    return tree


def _keys(path: str | Sequence[str]) -> list[str]:
    return path.split(".") if isinstance(path, str) else list(path)


def get_path(tree: Mapping[str, Any], path: str | Sequence[str]) -> Any:
    """The value at a dotted path; ConfigError naming the first missing part."""
    keys, node = _keys(path), tree
    for depth, key in enumerate(keys):
        if not isinstance(node, Mapping) or key not in node:
            where = ".".join(keys[:depth]) or "<root>"
            raise ConfigError(f"{'.'.join(keys)}: no such config key ({key!r} is not under {where})")
        node = node[key]
    return node


def set_path(tree: dict[str, Any], path: str | Sequence[str], value: Any) -> None:
    """Set the value at a dotted path, creating mappings on the way; ConfigError if a part is not one."""
    keys, node = _keys(path), tree
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(keys[: depth + 1])} is not a mapping")
        node = child
    node[keys[-1]] = value
