"""What the report reads from a results tree: evaluation metrics, pre-training runs and their
dumps, and the order the config lists its variants in (so tables and summary follow the config,
not a hard-coded list)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from cmgh import layout
from cmgh.worlds import NoiseSetting, setting_of
from cmgh.errors import DataError
from cmgh.plots import Run  # backbone, variant, seed, run folder

log = logging.getLogger(__name__)


def collect(results: str | Path) -> pd.DataFrame:
    """Every numeric top-level metric of every eval run: long table ``task, backbone, variant, seed, metric, value``."""
    root = Path(results)
    rows = []
    for path in sorted(root.glob(layout.eval_glob())):
        task, backbone, variant, seed_dir = path.parts[-5:-1]
        try:
            seed = int(seed_dir.removeprefix("seed"))
            data = json.loads(path.read_text())
        except (ValueError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: not a metrics file ({exc.__class__.__name__}: {str(exc)[:120]})") from None
        if not isinstance(data, dict):
            raise DataError(f"{path}: not a metrics file (a JSON {type(data).__name__}; expected an object of metric: number)")
        for key, value in data.items():
            if isinstance(value, bool) or not (value is None or isinstance(value, (int, float))):
                continue
            if value is not None and not math.isfinite(value):  # json reads NaN/Infinity: never a table's number
                log.warning("%s: %s is %s, not a finite number: left out of the tables", path, key, value)
                value = None
            rows.append({"task": task, "backbone": backbone, "variant": variant, "seed": seed, "metric": key,
                         "value": math.nan if value is None else float(value)})
    if not rows:
        raise DataError(f"{root / 'eval'}: no {layout.METRICS} found (expected {layout.eval_glob('{task}')})")
    return pd.DataFrame(rows)


def wide(long: pd.DataFrame) -> pd.DataFrame:
    """One row per (backbone, variant, seed), one column per ``task/metric``."""
    table = long.assign(column=long["task"] + "/" + long["metric"]).pivot_table(
        index=["backbone", "variant", "seed"], columns="column", values="value", aggfunc="first", dropna=False
    )
    table.columns.name = None
    return table.reset_index()


# --------------------------------------------------------------------------- variant order


def read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not a YAML config ({str(exc).splitlines()[0][:120]})") from None
    return tree if isinstance(tree, dict) else {}


def run_folders(results: Path) -> list[Run]:
    """Every pre-training run folder, in path order."""
    runs = []
    for d in sorted(Path(results).glob(layout.RUN_GLOB)):
        if d.is_dir():
            try:
                runs.append((d.parts[-3], d.parts[-2], int(d.name.removeprefix("seed")), d))
            except ValueError:
                continue
    return runs


def tree_config(results: str | Path) -> dict[str, Any]:
    """The config of a results tree: the workflow's resolved one, else the one a pre-training run wrote
    beside its outputs (the first that names variants); empty when neither is there."""
    results = Path(results)
    candidates = [layout.resolved_config(results), *(d / layout.CONFIG for *_, d in run_folders(results))]
    for path in candidates:
        if path.is_file():
            tree = read_yaml(path)
            if isinstance(tree.get("variants"), dict) and tree["variants"]:
                return tree
    return {}


def configured_variants(results: str | Path) -> list[str]:
    """The config's variant names in its order (:func:`tree_config`); empty without a config."""
    return [str(name) for name in tree_config(results).get("variants", {})]


def variant_order(found: Iterable[str], configured: Iterable[str] = ()) -> tuple[str, ...]:
    """``random``, the baseline, then the configured variants in config order, then any other found
    variant alphabetically (only names in ``found`` are kept)."""
    found = set(found)
    head = [layout.RANDOM_VARIANT, layout.BASELINE_VARIANT, *configured]
    order = list(dict.fromkeys(name for name in head if name in found))
    return (*order, *sorted(found - set(order)))


def comparisons(order: Iterable[str]) -> list[str]:
    """The variants compared against the baseline: all but the baseline and the random init."""
    return [v for v in order if v not in (layout.BASELINE_VARIANT, layout.RANDOM_VARIANT)]


def order_key(order: tuple[str, ...]) -> Callable[[str], tuple[int, str]]:
    """Sort key placing ``order``'s names first in that order, anything else after, alphabetically."""
    return lambda name: (order.index(name), "") if name in order else (len(order), name)


def results_order(results: str | Path, found: Iterable[str]) -> tuple[str, ...]:
    return variant_order(found, configured_variants(results))


# --------------------------------------------------------------------------- pre-training runs


def pretrain_runs(results: Path, order: tuple[str, ...] | None = None) -> list[Run]:
    """Every pre-training run, by backbone, variant (in ``order``, default the tree's) and seed."""
    runs = run_folders(results)
    key = order_key(order if order is not None else results_order(results, {r[1] for r in runs}))
    return sorted(runs, key=lambda r: (r[0], key(r[1]), r[2]))


def train_logs(runs: Iterable[Run]) -> pd.DataFrame:
    """Every run's per-step log rows, with ``backbone, variant, seed`` columns."""
    frames = []
    for backbone, variant, seed, d in runs:
        path = d / layout.TRAIN_LOG
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if rows:
                frames.append(pd.DataFrame(rows).assign(backbone=backbone, variant=variant, seed=seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_config(run_dir: Path) -> dict[str, Any]:
    """The resolved config a run wrote beside its outputs (empty without one)."""
    path = Path(run_dir) / layout.CONFIG
    return read_yaml(path) if path.is_file() else {}


def noise_setting_of(results: Path) -> NoiseSetting:
    """The injected noise of a results tree (:mod:`cmgh.worlds`), from the config its runs recorded."""
    for *_, run in run_folders(results):
        path = run / layout.CONFIG
        if path.is_file():
            noise = run_config(run).get("data", {}).get("noise", {})
            return setting_of(noise.get("audio_rate", 0.0), noise.get("text_rate", 0.0), path)
    raise DataError(f"{results}/pretrain: no run with a {layout.CONFIG} to read the noise rate from")
