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
:mod:`~cmgh.evaluate.msrvtt` and :mod:`~cmgh.evaluate.noise`, each registered in
:data:`TASK_REGISTRY` under its name in :data:`cmgh.evaluate.TASKS`.
"""

from __future__ import annotations

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
from cmgh.evaluate import audioset, kinetics, msrvtt, noise  # noqa: F401  (each registers its task)
from cmgh.evaluate.embeddings import Timer
from cmgh.evaluate.encoder import Encoder
from cmgh.evaluate.registry import TASK_REGISTRY
from cmgh.io import atomic_write_json
from cmgh.track import NullTracker, Tracker, evaluation_dataset

log = logging.getLogger(__name__)

__all__ = ["TASK_REGISTRY", "evaluate"]


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
    meta = {"task": task, **enc.meta}
    payload = _clean({**result, "meta": meta, "params": params, "timing": timing})
    atomic_write_json(out / layout.METRICS, payload)
    tags = {k: str(v) for k, v in meta.items() if k != "checkpoint_sha256"}
    tracker.set_tags({"stage": "evaluate", **tags})
    tracker.log_datasets([evaluation_dataset(ecfg, task)])
    tracker.log_params({f"eval.{k}": v for k, v in params.items() if not isinstance(v, (list, dict))})
    tracker.log_metrics({f"{task}/{k}": float(v) for k, v in result.items() if v is not None and math.isfinite(float(v))})
    log.info("evaluate %s %s/%s/seed%d -> %s", task, enc.backbone, enc.variant, enc.seed, out)
    return payload
