"""Run one evaluation task on a pre-trained encoder (or its random initialization) and write its results.

``evaluate(cfg, task, checkpoint_dir, out_dir, random_init=False)`` writes, in ``out_dir`` (by
default :func:`cmgh.layout.eval_dir`, ``results/eval/{task}/{backbone}/{variant}/seed{seed}/``):

* :data:`~cmgh.layout.METRICS` - flat numeric metrics at the top level (each task module lists
  its keys), plus ``meta`` (task, backbone, variant, seed, checkpoint and its SHA-256,
  random_init), ``params`` (chosen hyperparameters, split sizes) and ``timing`` (seconds in
  encoder forward passes, probe fitting and metric computation). Non-finite values are ``null``.
* :data:`~cmgh.layout.CONFIG` - the resolved evaluation config (the model and pretrain sections
  are the checkpoint's own, :mod:`cmgh.evaluate.encoder`).
* task extras (the embedding cache, predictions, noise scores and ROC curves).

The tasks are :mod:`~cmgh.evaluate.kinetics`, :mod:`~cmgh.evaluate.audioset`,
:mod:`~cmgh.evaluate.msrvtt` and :mod:`~cmgh.evaluate.detection`, each registered in
:data:`TASK_REGISTRY` under its name in :data:`cmgh.evaluate.TASKS`.

``evaluate_run(cfg, task, run_dir, out_dir)`` runs a task of :data:`RUN_TASK_REGISTRY`
(:data:`cmgh.evaluate.RUN_TASKS`: :mod:`~cmgh.evaluate.detection_over_training`) on what a pre-training run
recorded while it trained, into the same folder and files (``meta`` names the run instead of a
checkpoint); its values over training go to the tracker at their training steps.

``evaluate_tracked(cfg, task, checkpoint, ...)`` is either of them as one tracked run, nested under
the pre-training run (``cmgh evaluate``); its tracker comes from the factory the caller passes.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmgh import layout
from cmgh.config import Config
from cmgh.errors import DataError
from cmgh.evaluate import RUN_TASKS, TASK_DATASETS
from cmgh.evaluate import audioset, detection, detection_over_training, kinetics, msrvtt  # noqa: F401  (each registers its task)
from cmgh.evaluate.embeddings import Timer
from cmgh.evaluate.encoder import Encoder
from cmgh.evaluate.overrides import evaluation_config
from cmgh.evaluate.registry import RUN_TASK_REGISTRY, TASK_REGISTRY, Series
from cmgh.io import atomic_write_json
from cmgh.tracking import DatasetRef, NullTracker, Tracker, TrackerFactory, evaluation_dataset, open_null, scored_corpus

log = logging.getLogger(__name__)

__all__ = ["RUN_TASK_REGISTRY", "TASK_REGISTRY", "evaluate", "evaluate_run", "evaluate_tracked"]


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats -> None, numpy scalars -> Python."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def evaluate(
    cfg: Config,
    task: str,
    checkpoint_dir: str | Path,
    out_dir: str | Path | None = None,
    random_init: bool = False,
    tracker: Tracker | None = None,
) -> dict[str, Any]:
    """Run ``task`` on the checkpoint in ``checkpoint_dir`` (or its random init); returns what metrics.json holds."""
    runner = TASK_REGISTRY.get(task)
    tracker = tracker or NullTracker()
    enc = Encoder(cfg, checkpoint_dir, random_init)
    out = Path(out_dir) if out_dir is not None else enc.default_out(cfg, task)
    out.mkdir(parents=True, exist_ok=True)
    ecfg = enc.cfg  # the evaluation config: the given tree + the checkpoint's model/pretrain sections
    ecfg.write(out)
    timer = Timer()
    start = time.perf_counter()
    with torch.random.fork_rng():
        result, params = runner(ecfg, enc, out, timer)
    timing = {**{f"{k}_s": v for k, v in timer.seconds.items()}, "total_s": time.perf_counter() - start}
    payload = _record(out, task, result, {"task": task, **enc.meta}, params, timing, tracker, [evaluation_dataset(ecfg, task, TASK_DATASETS[task])])
    log.info("evaluate %s %s/%s/seed%d -> %s", task, enc.backbone, enc.variant, enc.seed, out)
    return payload


def run_summary(run_dir: Path) -> dict[str, Any]:
    """A finished pre-training run's ``summary.json`` (backbone, variant, seed, steps)."""
    path = Path(run_dir) / layout.SUMMARY
    try:
        summary = json.loads(path.read_text())
        return {"backbone": str(summary["backbone"]), "variant": str(summary["variant"]), "seed": int(summary["seed"]),
                "pretrain_steps": int(summary.get("steps", 0))}
    except FileNotFoundError:
        raise DataError(f"{path}: not found (expected a finished pre-training run in {run_dir})") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: not a run summary ({type(exc).__name__}: {str(exc)[:120]}; expected backbone, variant, seed)") from None


def evaluate_run(
    cfg: Config, task: str, run_dir: str | Path, out_dir: str | Path | None = None, tracker: Tracker | None = None
) -> dict[str, Any]:
    """Run ``task`` (:data:`RUN_TASK_REGISTRY`) on the records of the finished pre-training run in
    ``run_dir``; returns what metrics.json holds (its metrics: each value at its last training step)."""
    runner = RUN_TASK_REGISTRY.get(task)
    tracker = tracker or NullTracker()
    run_dir = Path(run_dir)
    run = run_summary(run_dir)
    out = Path(out_dir) if out_dir is not None else layout.eval_dir(cfg.path("results"), task, run["backbone"], run["variant"], run["seed"])
    out.mkdir(parents=True, exist_ok=True)
    ecfg = evaluation_config(cfg, run_dir, run["variant"])  # the run's pretrain section: its steps, dumps, corpora, vt_weight
    ecfg.write(out)
    timer = Timer()
    start = time.perf_counter()
    result, params, steps = runner(ecfg, run_dir, out, timer)
    timing = {**{f"{k}_s": v for k, v in timer.seconds.items()}, "total_s": time.perf_counter() - start}
    meta = {"task": task, **run, "pretrained_variant": run["variant"], "random_init": False, "run": str(run_dir.resolve())}
    datasets = [scored_corpus(ecfg, task, name) for name in params.get("corpora", [])]
    payload = _record(out, task, result, meta, params, timing, tracker, datasets, steps)
    log.info("evaluate %s %s/%s/seed%d -> %s", task, run["backbone"], run["variant"], run["seed"], out)
    return payload


def run_meta(run_dir: Path) -> dict[str, Any]:
    """backbone, variant and seed of a pre-training run folder: its summary.json (:func:`run_summary`),
    else its checkpoint's meta (a run in progress)."""
    if (Path(run_dir) / layout.SUMMARY).is_file():
        return run_summary(run_dir)
    from cmgh.checkpoint import load

    return dict(load(run_dir)["meta"])


def evaluate_tracked(
    cfg: Config, task: str, checkpoint: str | Path, out_dir: str | Path | None = None, *, random_init: bool = False,
    open_tracker: TrackerFactory = open_null,
) -> tuple[dict[str, Any], Path]:
    """Evaluate ``task`` on the run in ``checkpoint`` (its random init with ``random_init``) as one
    tracked run, nested under the pre-training run in that folder; returns what metrics.json holds
    and the folder it was written to (default :func:`cmgh.layout.eval_dir`). A run task
    (:data:`cmgh.evaluate.RUN_TASKS`) scores the run's records, any other its encoder."""
    run_dir = Path(checkpoint)
    run = run_meta(run_dir)
    backbone, seed = str(run["backbone"]), str(run["seed"])
    variant = layout.RANDOM_VARIANT if random_init else str(run["variant"])
    tags = {"task": task, "backbone": run["backbone"], "variant": variant, "seed": run["seed"]}
    parent = None if random_init else run_dir  # the run that lives in the checkpoint's folder
    out = Path(out_dir) if out_dir else layout.eval_dir(cfg.path("results"), task, backbone, variant, seed)
    with open_tracker(cfg, layout.eval_key(task, backbone, variant, seed), tags, nested_under=parent, stage="evaluate", out=out) as tracker:
        if task in RUN_TASKS:
            return evaluate_run(cfg, task, run_dir, out, tracker=tracker), out
        return evaluate(cfg, task, checkpoint, out, random_init=random_init, tracker=tracker), out


def _record(out: Path, task: str, result: dict[str, float], meta: dict[str, Any], params: dict[str, Any], timing: dict[str, float],
            tracker: Tracker, datasets: list[DatasetRef], steps: Series | None = None) -> dict[str, Any]:
    """Write metrics.json and track the evaluation: its metrics once, or ``steps`` (each at its training step)."""
    payload = _clean({**result, "meta": meta, "params": params, "timing": timing})
    atomic_write_json(out / layout.METRICS, payload)
    tags = {k: str(v) for k, v in meta.items() if k != "checkpoint_sha256"}
    tracker.set_tags({"stage": "evaluate", **tags})
    tracker.log_datasets(datasets)
    tracker.log_params({f"eval.{k}": v for k, v in params.items() if not isinstance(v, (list, dict))})
    for step, values in (steps.items() if steps is not None else [(None, result)]):
        tracker.log_metrics({f"{task}/{k}": float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}, step=step)
    return payload
