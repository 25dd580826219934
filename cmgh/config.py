"""Load, override, validate and resolve the one config tree.

The JSON schema in ``cmgh/defaults/config.schema.yaml`` is the single source of structure and
defaults; it and the default config ``cmgh/defaults/config.yaml`` ship as package data, so an
installed package needs no checkout. The workflow validates its config through this module too, so
a key accepted by the CLI is accepted by the workflow. Every validation failure becomes a one-line :class:`ConfigError` naming the key path.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from cmgh import yaml_loader
from cmgh.errors import ConfigError
from cmgh.io import atomic_write_text, redacted
from cmgh.keypaths import set_path
from cmgh.schema import DEFAULTS, choices, fill_defaults, integers, schema, validate

# No path here hangs off the folder this package was imported from: a venv (or an installed wheel)
# shared by several checkouts serves each from its own working directory (see resolve_path).
DEFAULT_CONFIG = DEFAULTS / "config.yaml"  # the mini world, read when no config file is given


class Config(Mapping[str, Any]):
    """Read-only view of a validated config tree with attribute access (``cfg.pretrain.steps``)."""

    __slots__ = ("_data", "_path")

    def __init__(self, data: Mapping[str, Any], path: str = "") -> None:
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_path", path)

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        if isinstance(value, Mapping):
            return Config(value, f"{self._path}{key}.")
        return value

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"config has no key '{self._path}{key}'") from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Config is read-only; use with_overrides() or load(..., overrides=...)")

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Config({self._data!r})"

    def to_dict(self, masked: bool = False) -> dict[str, Any]:
        """The tree (a copy); ``masked``: every URL password in it masked (:func:`cmgh.io.redacted`)."""
        return _masked(self._data) if masked else copy.deepcopy(dict(self._data))

    def path(self, name: str) -> Path:
        """An entry of ``paths`` as an absolute path (relative ones hang off the working directory)."""
        return resolve_path(self._data["paths"][name])

    def to_yaml(self, masked: bool = True) -> str:
        """The tree as YAML to write or print: URL passwords masked unless ``masked=False`` (a
        config a job reads back as its input, such as the workflow's resolved config)."""
        return yaml.safe_dump(self.to_dict(masked=masked), sort_keys=False)

    def write(self, directory: str | os.PathLike[str], filename: str = "config.yaml") -> Path:
        """Write the fully resolved config beside a step's outputs (atomically, passwords masked:
        read back, a masked store URI is refused where it would be used, :mod:`cmgh.track.uri`)."""
        target = Path(directory) / filename
        atomic_write_text(target, self.to_yaml())
        return target


def _masked(node: Any) -> Any:
    if isinstance(node, str):
        return redacted(node)
    if isinstance(node, Mapping):
        return {key: _masked(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_masked(value) for value in node]
    return copy.deepcopy(node)


def resolve_path(value: str | os.PathLike[str]) -> Path:
    """A path a config names, absolute: relative ones are relative to the working directory (the
    project folder the CLI or Snakemake runs in: the checkout for the default DAG), as Snakemake
    reads a rule's relative paths; never to where the package is installed."""
    return Path(os.path.abspath(Path(value).expanduser()))  # a/../b is b: one spelling per place (storages compare by it)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], YAML-parsed value)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    try:
        value = yaml_loader.load(raw) if raw.strip() else ""  # "2e-3" is the number, alone or in a list
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({exc.__class__.__name__})") from None
    except ConfigError as exc:
        raise ConfigError(f"--set {key}: {exc}") from None
    return key.strip().split("."), value


SNAKEMAKE_SETS_KEY = "set"  # snakemake --config set=[a.b=1, ...]: the workflow's `--set` (never a config key)


def snakemake_sets(value: Any) -> list[str]:
    """The ``key.path=value`` items of ``snakemake --config set=...`` (one item or a list of them)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"--config {SNAKEMAKE_SETS_KEY}={value!r}: expected key.path=value or a list [a.b=1, c.d=2]")
    return items


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    for item in overrides:
        keys, value = parse_override(item)
        try:
            set_path(data, keys, value)
        except ConfigError as exc:
            raise ConfigError(f"--set {item}: {exc}") from None
    return data


def deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base`` (mappings merge, other values replace)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A config file's top-level mapping; anything else (missing, unreadable, not UTF-8, not YAML,
    empty or not a mapping) is a one-line error naming the file: an empty file is never "all defaults"."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r}); expected a UTF-8 YAML file") from None
    try:
        data = yaml_loader.load(text)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        raise ConfigError(f"{path}: empty (expected a mapping of config keys)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, got {type(data).__name__}")
    return data


def from_dict(data: Mapping[str, Any], overrides: Sequence[str] = ()) -> Config:
    """Validate a raw tree (after overrides), fill defaults, and check cross-key constraints."""
    tree = apply_overrides(copy.deepcopy(dict(data)), overrides)
    validate(tree)
    integers(schema(), tree)  # 6e0 at an integer key is 6: one value, one fingerprint
    fill_defaults(schema(), tree)
    validate(tree)
    _check_consistency(tree)
    return Config(tree)


ConfigFiles = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None


def load(paths: ConfigFiles = None, overrides: Sequence[str] = ()) -> Config:
    """Load YAML config files (default: the package's ``cmgh/defaults/config.yaml``), apply ``key=value`` overrides, validate.

    Several files stack in order, as Snakemake's ``--configfile`` does: each is deep-merged over
    the ones before it (mappings merge, other values replace); the default is read only when none is given.
    """
    files = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths or ())
    tree: dict[str, Any] = {}
    for path in files or [DEFAULT_CONFIG]:
        tree = deep_merge(tree, read_yaml(path))
    return from_dict(tree, overrides)


def with_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    return from_dict(cfg.to_dict(), overrides)


def for_variant(cfg: Config, variant: str) -> Config:
    """The config a pre-training variant runs with: its entry deep-merged over the tree."""
    variants = cfg.to_dict()["variants"]
    if variant not in variants:
        raise ConfigError(f"variant {variant!r} is not defined (expected one of {', '.join(variants)})")
    merged = deep_merge(cfg.to_dict(), variants[variant])
    pretrain = merged["pretrain"]
    if pretrain.get("budget") == "wall_time":  # equal compute: the plain baseline's wall time, in this variant's steps
        pretrain["steps"] = max(1, round(pretrain["steps"] / pretrain["step_cost"]))
    try:
        return from_dict(merged)
    except ConfigError as exc:
        raise ConfigError(f"variants.{variant}: {exc}") from None


PRETRAIN_CORPORA = choices("pretrain.corpora.dataset")  # the datasets `pretrain.corpora` may name


def _check_consistency(tree: Mapping[str, Any]) -> None:
    """Constraints that span keys (the schema checks one key at a time)."""
    synth = tree["data"]["synth"]
    if synth["kinetics"]["classes"] > synth["concepts"]:
        raise ConfigError(
            f"data.synth.kinetics.classes: {synth['kinetics']['classes']} exceeds data.synth.concepts "
            f"({synth['concepts']}); expected at most the number of concepts"
        )
    model = tree["model"]
    if model["width"] % model["heads"]:
        raise ConfigError(f"model.heads: {model['heads']} does not divide model.width ({model['width']})")
    frames = tree["features"]["video"]["frames"]
    if frames % model["video_patch"][0]:
        raise ConfigError(
            f"model.video_patch: temporal patch {model['video_patch'][0]} does not divide "
            f"features.video.frames ({frames})"
        )
    size = tree["features"]["video"]["size"]
    if size % model["video_patch"][1] or size % model["video_patch"][2]:
        raise ConfigError(f"model.video_patch: spatial patch {model['video_patch'][1:]} does not divide features.video.size ({size})")
    _check_paths(tree)
    _check_features(tree["features"])
    _check_sweep(tree["sweep"])
    corpora(tree["pretrain"])
    for name, entry in tree.get("variants", {}).items():
        if not isinstance(entry, Mapping):
            raise ConfigError(f"variants.{name}: expected a mapping of config overrides")
        if "variants" in entry:
            raise ConfigError(f"variants.{name}: a variant cannot define variants")


PATH_KEYS = ("paths.data", "paths.features", "paths.results", "worlds.root")  # folders the workflow creates


def _check_paths(tree: Mapping[str, Any]) -> None:
    """A folder path holds no NUL byte and no blank name (``' '``, ``a/ /b``): the OS refuses the first
    late, and the second silently makes a folder a user cannot see."""
    for key in PATH_KEYS:
        section, name = key.split(".")
        value = str(tree.get(section, {}).get(name, ""))
        if "\x00" in value:
            raise ConfigError(f"{key}: {value!r} holds a NUL byte (expected a path)")
        blank = [part for part in value.split("/") if part and not part.strip()]
        if blank or (value and not value.strip()):
            raise ConfigError(f"{key}: {value!r} has a blank folder name (expected names with a visible character)")


def _check_features(features: Mapping[str, Any]) -> None:
    video, augment = features["video"], features["augment"]
    if video["short_side"] < video["size"]:
        raise ConfigError(f"features.video.short_side: {video['short_side']} is below features.video.size ({video['size']}); packed clips must cover the crop")
    for key in ("crop_scale", "crop_ratio"):
        low, high = augment[key]
        if low > high:
            raise ConfigError(f"features.augment.{key}: [{low}, {high}] is not a range (expected low <= high)")


def _check_sweep(sweep: Mapping[str, Any]) -> None:
    """The pruner fits the seeds: median/hyperband read one seed's learning curve, Wilcoxon pairs
    seeds across trials and decides before a trial's last seed (k seeds: smallest p-value 2^-k)."""
    seeds, pruner = list(sweep["seeds"]), sweep["pruner"]
    if pruner in ("median", "hyperband") and len(seeds) > 1:
        raise ConfigError(f"sweep.pruner: {pruner} prunes on one seed's learning curve, but sweep.seeds has {len(seeds)} ({seeds}); "
                          "expected wilcoxon (seeds as instances) or none")
    if pruner != "wilcoxon":
        return
    if len(seeds) < 3:
        raise ConfigError(f"sweep.pruner: wilcoxon needs at least 3 sweep.seeds (it compares 2 or more seeds before the last), "
                          f"got {seeds}; expected more seeds, or median/hyperband for one seed")
    floor = 2.0 ** -(len(seeds) - 1)
    if sweep["wilcoxon_p_threshold"] <= floor:
        raise ConfigError(f"sweep.wilcoxon_p_threshold: {sweep['wilcoxon_p_threshold']} can never prune with {len(seeds)} sweep.seeds "
                          f"(the smallest p-value before the last seed is {floor:g}); expected above {floor:g}, or more seeds")


def corpora(pretrain: Mapping[str, Any]) -> list[tuple[str, float]]:
    """``pretrain.corpora`` as ``(dataset, weight)`` pairs, weights summing to 1 (the schema checked each entry)."""
    entries = [(str(e["dataset"]), float(e.get("weight", 1.0))) for e in pretrain["corpora"]]
    names = [name for name, _ in entries]
    if len(set(names)) != len(names):
        raise ConfigError(f"pretrain.corpora: {names} names a dataset twice; expected each corpus once with one weight")
    total = sum(weight for _, weight in entries)
    if total <= 0:
        raise ConfigError(f"pretrain.corpora: every weight is 0 ({names}); expected at least one positive weight")
    return [(name, weight / total) for name, weight in entries]


def corpus_format(tree: Mapping[str, Any], dataset: str) -> str:
    """How ``dataset``'s features are stored: ``packed`` for a configured pre-training corpus when
    ``features.format`` is packed, ``decoded`` otherwise (downstream sets are always decoded).
    One rule for the CLI and the workflow; ``tree`` is a config or its ``to_dict()``."""
    tree = tree.to_dict() if isinstance(tree, Config) else tree
    if tree["features"]["format"] != "packed":
        return "decoded"
    return "packed" if dataset in {name for name, _ in corpora(tree["pretrain"])} else "decoded"
