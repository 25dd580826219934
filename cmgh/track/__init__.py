"""Experiment tracking in MLflow: the edge behind the ground floor's :class:`cmgh.tracking.Tracker`.

The core only ever sees a :class:`~cmgh.tracking.Tracker` it is handed (it imports nothing of this
package); the MLflow adapter (:mod:`cmgh.track.mlflow_tracker`) is imported only when tracking is
on, and tracking failures (server down, disk full) are logged as warnings, never raised into a run.

:func:`open_tracker` is the one entry point, a :class:`cmgh.tracking.TrackerFactory` the CLI and
the sweep pass to the runs they start; a tracker is a context manager that ends its run FINISHED,
or FAILED when the block raises (KILLED on Ctrl-C)::

    with open_tracker(run_cfg, layout.run_key("ms", "gr", 0), {"variant": "gr"}, stage="pretrain", out=out) as tracker:
        pretrain(run_cfg, spec, tracker=tracker)

One MLflow experiment per config ``name`` (or ``tracking.experiment``); one run per *run key*:
the caller's key, the hash of the run's identity (:func:`cmgh.identity.run_identity` of its stage)
and the hash of where the run lives (its resolved output folder, also the tag ``out``), stored as
the tag ``cmgh.run_key`` (:func:`tracked_key`). Opening a key that already has a run reuses that
run (a resumed training continues its run, a re-run of a finished job adds nothing), and metrics
of steps the run already holds are not logged twice; a run is never reopened by another folder.

An evaluation's headline metrics (:data:`cmgh.evaluate.HEADLINE_METRICS`) also go onto the
pre-training run it scored. The workflow's evaluation jobs record their tracking instead of opening
the store, and one workflow step logs the records (:mod:`cmgh.track.deferred`): same content, without
MLflow's start-up in each of them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cmgh import layout
from cmgh.io import json_digest
from cmgh.track.names import headline_keys
from cmgh.track.provenance import config_hash, git_state, provenance_tags
from cmgh.track.uri import artifact_root, tracking_uri
from cmgh.tracking import NullTracker, Tracker

__all__ = [
    "artifact_root", "config_hash", "experiment_name", "git_state", "open_tracker", "provenance_tags", "run_location",
    "tracked_key", "tracking_uri",
]  # fmt: skip

log = logging.getLogger(__name__)  # the adapter logs under this name too: one logger for tracking

SAMPLED_STAGES = ("pretrain", "sweep_trial")  # the training runs: they sample system metrics (tracking.system_metrics)
OUT_TAG = "out"  # the resolved folder a run lives in: part of its key, and how a child finds its parent


def run_location(out: str | os.PathLike[str]) -> str:
    """Where a run lives, as its key and tag hold it: the absolute, resolved output folder."""
    return str(Path(out).expanduser().resolve())


def tracked_key(run_key: str, identity_hash: str, out: str | os.PathLike[str]) -> str:
    """The one run key: ``pretrain/ms/gr/seed0@<identity hash>@<folder hash>``. The same config in
    another folder is another run, so a finished run is never reopened by another folder."""
    return f"{run_key}@{identity_hash}@{json_digest(run_location(out), 12)}"


def experiment_name(cfg: Any) -> str:
    """The MLflow experiment of a config: ``tracking.experiment``, else the config ``name``."""
    return str(cfg.tracking.experiment or "") or str(cfg.name)


def open_tracker(
    cfg: Any,
    run_key: str,
    tags: Mapping[str, Any],
    nested_under: str | os.PathLike[str] | None = None,
    *,
    stage: str,
    out: str | os.PathLike[str],
    restart: bool = False,
) -> Tracker:
    """The tracker of one run: :class:`NullTracker` when ``tracking.enabled`` is false or mlflow is
    missing, else an MLflow tracker on the run of :func:`tracked_key` (created, or reused when it
    exists; ``restart`` always starts a new run). Never raises for tracking reasons.

    ``cfg`` is the config the run computes with (for pre-training: ``for_variant`` applied); its
    flattened tree becomes the run's params and its YAML the artifact ``config.yaml`` (both with URL
    passwords masked, as every message naming the store is). ``stage``
    (one of :data:`cmgh.identity.RUN_STAGES`) picks the identity rule and becomes the tag ``stage``.
    ``out`` is the folder the run writes (tag ``out``). Training stages (:data:`SAMPLED_STAGES`)
    sample system metrics while the run is open when ``tracking.system_metrics`` is on. ``nested_under`` is the parent run's folder
    (a path: its newest run there), a parent run id, or a parent's ``run_key`` (a string).
    """
    from cmgh import keypaths
    from cmgh.track.deferred import DeferredTracker, deferred_spool
    from cmgh.track.uri import mlflow_version

    if not bool(cfg.tracking.enabled) or os.environ.get("RANK", "0") != "0":
        return NullTracker()  # disabled, or a non-main process of a distributed run
    if mlflow_version() is None:
        log.warning("tracking.enabled is true but mlflow is not installed; runs are not tracked")
        return NullTracker()
    uri = tracking_uri(cfg)
    provenance = provenance_tags(cfg, stage)
    parent = [OUT_TAG, run_location(nested_under)] if isinstance(nested_under, os.PathLike) else nested_under
    opened: dict[str, Any] = {
        "experiment": experiment_name(cfg),
        "run_key": tracked_key(run_key, provenance["cmgh.config_hash"], out),
        "run_name": run_key,
        "tags": {**provenance, **{k: str(v) for k, v in tags.items()}, OUT_TAG: run_location(out)},
        "params": {k: None if v is None else str(v) for k, v in keypaths.flatten(cfg.to_dict(masked=True)).items()},
        "artifact_location": artifact_root(cfg, uri),
        "nested_under": parent,
        "restart": restart,
        "flush_every": int(cfg.tracking.flush_every),
        "system_metrics": float(cfg.tracking.system_metrics_interval_seconds) if cfg.tracking.system_metrics and stage in SAMPLED_STAGES else None,
        "parent_metrics": headline_keys() if stage == "evaluate" else [],  # an evaluation's headline also on its pre-training run
    }
    spool = deferred_spool(uri, stage)
    tracker: Tracker
    if spool is not None:  # a workflow evaluation job: recorded now, logged by the workflow's track_evaluations step
        tracker = DeferredTracker(spool, opened)
    else:
        try:
            from cmgh.track.mlflow_tracker import MlflowTracker
        except ImportError as exc:
            log.warning("tracking.enabled is true but mlflow cannot be imported (%s); runs are not tracked", exc)
            return NullTracker()
        tracker = MlflowTracker(uri, **{**opened, "nested_under": tuple(parent) if isinstance(parent, list) else parent})
    tracker.log_text(cfg.to_yaml(), layout.CONFIG)
    return tracker
