"""The config schema and its validator: structure, defaults and one-line messages naming the key path.

``cmgh/defaults/config.schema.yaml`` (package data, so an installed wheel validates on its own) is
the one source of structure and defaults (the Snakefile and :mod:`cmgh.config` both validate with
it). The validator is JSON Schema 2020-12 plus one rule JSON Schema lacks: a number is finite (no
``.inf``, ``.nan``), unless its schema node says ``allowNonFinite: true`` (a key where infinity
means something; an annotation other validators ignore).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cmgh.errors import ConfigError

# The package data: this schema and the default config, a folder on disk for any (unzipped) install,
# so Snakemake's `configfile:` can name the default config as a path.
DEFAULTS = Path(str(resources.files("cmgh").joinpath("defaults")))
SCHEMA_PATH = DEFAULTS / "config.schema.yaml"
ALLOW_NON_FINITE = "allowNonFinite"

_Base = jsonschema.Draft202012Validator


# Bounds of every integer and number whose schema node names none, so that no value reaches an
# allocator, a seed function or a sum it cannot take (the docs' header states them).
MAX_INTEGER = 2**31 - 1
MAX_NUMBER = 1e12


def _finite_type(validator: Any, types: Any, instance: Any, node: Mapping[str, Any]) -> Iterator[jsonschema.ValidationError]:
    """``type``, and a ``number`` is finite unless its node allows otherwise; an integer or number
    without a ``maximum`` of its own is bounded by :data:`MAX_INTEGER` / :data:`MAX_NUMBER`."""
    yield from _Base.VALIDATORS["type"](validator, types, instance, node)
    kinds = [types] if isinstance(types, str) else list(types)
    if (
        isinstance(instance, float) and not math.isfinite(instance) and "number" in kinds
        and not node.get(ALLOW_NON_FINITE, False)
    ):  # fmt: skip
        yield jsonschema.ValidationError(f"{instance!r} is not finite (expected a finite number)", validator="finite")
        return
    if isinstance(instance, bool) or not isinstance(instance, (int, float)) or "maximum" in node or "exclusiveMaximum" in node:
        return
    if isinstance(instance, float) and not math.isfinite(instance):  # allowed here (allowNonFinite): infinity means something
        return
    bound = MAX_INTEGER if "number" not in kinds else MAX_NUMBER
    if abs(instance) > bound:
        yield jsonschema.ValidationError(f"{instance!r} is out of range (expected at most {bound:g} in size: the bound of every "
                                         "value whose key names none)" if isinstance(bound, float) else
                                         f"{instance!r} is out of range (expected at most {bound}: the bound of every integer "
                                         "whose key names none)", validator="bound")


Validator = jsonschema.validators.extend(_Base, validators={"type": _finite_type})


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The config schema (cached: it is read on every CLI call)."""
    return yaml.load(SCHEMA_PATH.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 (a safe loader; libyaml's where built)


def choices(dotted: str) -> tuple[Any, ...]:
    """The allowed values of a config key (``model.backbones``), from the schema's ``enum``: the one
    list of dataset, backbone or objective names that the CLI, the workflow and the checks share."""
    node: Mapping[str, Any] = schema()
    for part in dotted.split("."):
        node = node.get("items", node)["properties"][part]  # through arrays of objects too
    node = node.get("items", node)
    return tuple(node["enum"])


def fill_defaults(node_schema: Mapping[str, Any], instance: Any) -> None:
    """Insert schema defaults into ``instance`` in place, recursing into nested objects."""
    if not isinstance(instance, dict):
        return
    for key, sub in node_schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            fill_defaults(sub, instance[key])


def integers(node_schema: Mapping[str, Any], instance: Any) -> Any:
    """``instance`` with every integral float at an integer-only key made an int (``6e0`` -> 6): the
    value a key means, whatever its spelling, so a run's fingerprint does not depend on the spelling."""
    kinds = node_schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
    if isinstance(instance, float) and "integer" in kinds and "number" not in kinds and math.isfinite(instance) and instance.is_integer():
        return int(instance)
    if isinstance(instance, dict):
        props, extra = node_schema.get("properties", {}), node_schema.get("additionalProperties")
        for key, value in instance.items():
            sub = props.get(key, extra if isinstance(extra, dict) else {})
            instance[key] = integers(sub, value)
    elif isinstance(instance, list) and isinstance(node_schema.get("items"), dict):
        instance[:] = [integers(node_schema["items"], v) for v in instance]
    return instance


def _describe(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path) or "<root>"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        expected = f"expected one of {', '.join(allowed)}" if allowed else "no keys allowed here"
        return f"{path}: unknown key {', '.join(repr(e) for e in extra)} ({expected})"
    if error.validator == "enum":
        options = ", ".join(str(o) for o in error.validator_value)
        return f"{path}: {error.instance!r} is not one of {options}"
    if error.validator == "type":
        return f"{path}: {error.instance!r} is not of type {error.validator_value}"
    if error.validator == "minLength" and error.instance == "":
        return f"{path}: '' is empty (expected a non-empty value)"
    if error.validator == "pattern" and "description" in error.schema:  # the key's description says the form in words
        return f"{path}: {error.instance!r} is not of the expected form ({error.schema['description']})"
    return f"{path}: {error.message}"


def validate(data: Mapping[str, Any], against: Mapping[str, Any] | None = None) -> None:
    """Raise ConfigError for the first violation of the config schema (or ``against``), by key path;
    at one key a non-finite number is named before the bounds it also breaks."""
    validator = Validator(schema() if against is None else against)
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.validator != "finite", e.message))
    if errors:
        raise ConfigError(_describe(errors[0]))
