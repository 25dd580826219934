"""The generated worlds of a noise study (config/ablation.yaml, config/study.yaml): the whole DAG once
per injected noise setting (a world), each in its own results tree. Named and given its noise rates
here, once, for the workflow (which builds the trees: each tree's config and its Snakemake module)
and the report (which finds each tree's setting again from the config its runs wrote). The datasets
every world would generate and decode alike live once in a shared tree (:class:`SharedSets`): each
world's tree links them, so its jobs read them where its config says its data are."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmgh import layout
from cmgh.errors import ConfigError, DataError

log = logging.getLogger(__name__)
BOTH, TEXT, AUDIO = "both", "text", "audio"
MODALITIES = (BOTH, TEXT, AUDIO)  # worlds.modalities: which pairs of a triplet a rate misaligns


@dataclass(frozen=True)
class NoiseSetting:
    """One tree's injected noise: ``rate`` of the pre-training triplets misaligned in ``modality``
    (the clean tree, rate 0, is ``both``: it is the rate-0 point of every modality's curve)."""

    modality: str
    rate: float

    @property
    def name(self) -> str:
        """The tree's folder under ``worlds.root``: ``noise0.3`` (both), ``text0.2``, ``audio0.4``, ``noise0`` (clean)."""
        return f"{'noise' if self.modality == BOTH else self.modality}{self.rate:g}"

    @property
    def audio_rate(self) -> float:
        return self.rate if self.modality in (BOTH, AUDIO) else 0.0

    @property
    def text_rate(self) -> float:
        return self.rate if self.modality in (BOTH, TEXT) else 0.0

    def on(self, modality: str) -> bool:
        """Whether this tree is a point of ``modality``'s curve (the clean tree is on every one)."""
        return self.rate == 0 or self.modality == modality


def settings(rates: Iterable[float], modalities: Iterable[str]) -> list[NoiseSetting]:
    """Every tree of a noise study: the clean one once (when 0 is among the rates), every other rate
    once per modality, by modality then rate."""
    rates = sorted({float(r) for r in rates})
    out = [NoiseSetting(BOTH, 0.0)] if 0.0 in rates else []
    return out + [NoiseSetting(m, r) for m in modalities for r in rates if r > 0]


def setting_of(audio_rate: float, text_rate: float, where: object = "the tree") -> NoiseSetting:
    """The setting that injected these rates (as a tree's runs recorded them in their config)."""
    audio_rate, text_rate = float(audio_rate), float(text_rate)
    if audio_rate == text_rate:
        return NoiseSetting(BOTH, audio_rate)
    if audio_rate == 0:
        return NoiseSetting(TEXT, text_rate)
    if text_rate == 0:
        return NoiseSetting(AUDIO, audio_rate)
    raise DataError(f"{where}: data.noise.audio_rate {audio_rate:g} and text_rate {text_rate:g} differ and neither is 0; "
                    "expected one noise setting of a study (both equal, or one of them 0)")


def module_name(setting: NoiseSetting) -> str:
    """A world's Snakemake module name, also its rules' prefix (``noise0_3``: ``noise0_3_pretrain``)."""
    return setting.name.replace(".", "_").replace("-", "_")


def tree_config(tree: Mapping[str, Any], setting: NoiseSetting, root: Path) -> dict[str, Any]:
    """The full config of one world's tree under ``root`` (`worlds.root`): the study's config ``tree``
    at this noise setting, with its own paths (and, unless `tracking.uri` is set, one store for all
    trees under ``root``: the MLflow UI compares across rates)."""
    return _config_at(tree, setting, root / setting.name, root)


def shared_config(tree: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """The config of the shared tree under ``root``: the study's at the clean setting (the datasets built
    there do not depend on the noise: :class:`SharedSets`), with the shared tree's paths."""
    return _config_at(tree, NoiseSetting(BOTH, 0.0), layout.shared_tree(root), root)


def _config_at(tree: Mapping[str, Any], setting: NoiseSetting, base: Path, root: Path) -> dict[str, Any]:
    tree = copy.deepcopy(dict(tree))
    tree["variants"] = world_variants(tree, setting)
    tree["worlds"].update(noise_rates=[], variants={})  # a tree is one world: it runs what it holds
    tree["data"]["noise"].update(audio_rate=setting.audio_rate, text_rate=setting.text_rate)
    tree["paths"] = {"data": str(base / "data"), "features": str(base / "features"), "results": str(base)}
    if not tree["tracking"]["uri"]:
        tree["tracking"]["uri"] = f"sqlite:///{root / 'mlflow.db'}"
        tree["tracking"]["artifacts"] = tree["tracking"]["artifacts"] or str(root / "mlruns")
    return tree


def world_variants(tree: Mapping[str, Any], setting: NoiseSetting) -> dict[str, Any]:
    """The variants one world pre-trains (``worlds.variants`` by world name; all when it is not named)."""
    check_world_variants(tree, warn=False)  # the plan warned once already; every world's tree passes here
    names = tree["worlds"].get("variants", {}).get(setting.name)
    return tree["variants"] if names is None else {n: tree["variants"][n] for n in names}


def check_world_variants(tree: Mapping[str, Any], warn: bool = True) -> None:
    """``worlds.variants`` names worlds of the study and variants of the config, the baseline in each."""
    worlds, variants = tree["worlds"], tree["variants"]
    known = [s.name for s in settings(worlds["noise_rates"], worlds["modalities"])]
    for world, names in worlds.get("variants", {}).items():
        if warn and known and world not in known:  # a study overridden to fewer rates keeps its list: said, not refused
            log.warning("worlds.variants: %r is not a world of this study (its worlds: %s): its list is not used", world, ", ".join(known))
        unknown = [n for n in names if n not in variants]
        if unknown:
            raise ConfigError(f"worlds.variants.{world}: {', '.join(map(repr, unknown))} not defined (expected names of variants: {', '.join(variants)})")
        if layout.BASELINE_VARIANT not in names:
            raise ConfigError(f"worlds.variants.{world}: expected {layout.BASELINE_VARIANT!r} among them (every world's reference)")


def modules_snakefile(worlds: Iterable[NoiseSetting], snakefile: str | os.PathLike[str], config_function: str, shared_function: str | None = None) -> str:
    """A Snakefile of one `module` + `use rule` statement pair per world (Snakemake's documented DSL wants
    each module's name literally; the settings come from the config, so the statements are written from
    validated floats and the schema's modality names only). ``snakefile``: the root Snakefile relative to
    where the text is written; ``config_function``: the name of the workflow's function that gives a
    world's config from its modality and rate; ``shared_function``, where the worlds share datasets: the
    name of the one that gives the shared tree's config (its module, :data:`SHARED_MODULE`, comes first)."""
    lines = ["# Written by workflow/rules/worlds_common.smk (cmgh.worlds.modules_snakefile) from worlds.noise_rates and modalities; do not edit.", ""]
    modules = [(SHARED_MODULE, f"{shared_function}()")] if shared_function else []
    modules += [(module_name(setting), f"{config_function}({setting.modality!r}, {setting.rate!r})") for setting in worlds]
    for name, config in modules:
        lines += [f"module {name}:", f"    snakefile: {str(snakefile)!r}", f"    config: {config}", "",
                  "", f"use rule * from {name} as {name}_*", "", ""]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- the shared tree

SHARED_MODULE = layout.SHARED_TREE  # the shared tree's module name (no world's: those end in a rate)
SHARED_SETS_KEY = "_shared_sets"  # in a world module's config only: its SharedSets (the workflow's own channel, no config key)


@dataclass(frozen=True)
class SharedSets:
    """What the worlds of a study read from the shared tree (``root``, :func:`cmgh.layout.shared_tree`)
    instead of making their own: ``data`` generated once (their generator keys are the same in every
    world), ``features`` decoded once (those of them whose extraction does not read the world's own
    vocabulary, built from its noisy pre-training captions). :mod:`cmgh.plan` decides which."""

    root: Path
    data: tuple[str, ...] = ()
    features: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.data)

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    @property
    def features_root(self) -> Path:
        return self.root / "features"

    def to_dict(self) -> dict[str, Any]:
        return {"root": str(self.root), "data": list(self.data), "features": list(self.features)}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> SharedSets:
        return cls(Path(value["root"]), tuple(value["data"]), tuple(value["features"]))

    def links(self, data_root: Path, features_root: Path) -> list[tuple[Path, Path]]:
        """(link in a world's tree, shared folder it points at) of every shared dataset and feature set."""
        return [(data_root / d, self.data_root / d) for d in self.data] + [(features_root / d, self.features_root / d) for d in self.features]


def link_shared(links: Iterable[tuple[Path, Path]]) -> None:
    """Make each world's link to a shared folder (relative, so a moved root still resolves), where it is not
    there yet: the world's jobs then read a shared set at the path their config gives (the CLI knows no
    shared tree). A real folder in a link's place (a world's own copy from before) is refused, not deleted."""
    for link, target in links:
        relative = os.path.relpath(target, link.parent)
        if link.is_symlink():
            if os.readlink(link) == relative:
                continue
            link.unlink()
        elif link.exists():
            raise DataError(f"{link}: a world's own copy where the workflow links the shared {target}; remove it (the study reads the shared one)")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(relative, target_is_directory=True)
