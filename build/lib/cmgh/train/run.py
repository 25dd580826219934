"""One tracked pre-training run, as ``cmgh pretrain`` starts it: the variant's config resolved once,
the resume guard before anything is opened, the run's tracker, and how the run ends.

A run stopped on request before its last step (``stop_after``) ends KILLED, so a later job
resumes both the run and its tracked run; a finished one logs its conflict histogram and its model.
The tracker comes from the :class:`~cmgh.tracking.TrackerFactory` the caller passes (the CLI passes
MLflow's, :func:`cmgh.track.open_tracker`): this package imports no tracking backend.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cmgh import config as config_mod
from cmgh import keypaths, layout
from cmgh.config import Config
from cmgh.plots import run_conflict_histogram
from cmgh.tracking import TrackerFactory, open_null
from cmgh.train.loop import train
from cmgh.train.setup import RunSpec
from cmgh.train.state import check_out, finished

log = logging.getLogger(__name__)


def run_spec(cfg: Config, backbone: str, variant: str, seed: int, out: str | Path | None = None) -> RunSpec:
    """The run of ``backbone``/``variant``/``seed`` in ``out`` (default: its folder under ``paths.results``)."""
    folder = Path(out) if out else layout.run_dir(cfg.path("results"), backbone, variant, seed)
    return RunSpec(backbone=backbone, variant=variant, seed=seed, out=folder)


def pretrain_tracked(
    cfg: Config, spec: RunSpec, *, restart: bool = False, stop_after: int | None = None, open_tracker: TrackerFactory = open_null
) -> Path:
    """Pre-train ``spec`` from the config tree ``cfg`` as one tracked run; returns the path of its
    newest state (checkpoint.pt once finished). ``restart`` replaces the folder's run (of any
    configuration) with a new one; without it a run of another configuration there is refused
    before a tracked run is opened for it."""
    run_cfg = config_mod.for_variant(cfg, spec.variant)  # the one resolution of this run's config
    if not restart:
        check_out(run_cfg, spec)
        done = finished(spec)
        if done is not None and (stop_after is None or stop_after >= int(run_cfg.pretrain.steps)):
            log.info("%s: finished already: nothing to do (its tracked run is left as it was; --restart trains it again)", spec.out)
            return done
    tags = {"backbone": spec.backbone, "variant": spec.variant, "seed": spec.seed}
    key = layout.run_key(spec.backbone, spec.variant, spec.seed)
    with open_tracker(run_cfg, key, tags, stage="pretrain", out=spec.out, restart=restart) as tracker:
        path = train(run_cfg, spec, resume=not restart, tracker=tracker, stop_after=stop_after)
        if stop_after is not None and stop_after < int(run_cfg.pretrain.steps):
            tracker.close("KILLED")  # stopped on request before the end: a later job resumes it
            return path
        hist = run_conflict_histogram(spec.out, spec.backbone, spec.variant, spec.seed)
        if hist is not None:
            tracker.log_artifact(hist)
        tracker.log_model(
            path, name=f"{spec.backbone}-{spec.variant}-seed{spec.seed}", tags={**tags, "out": spec.out.resolve()},
            params={**tags, **keypaths.flatten({"model": run_cfg.to_dict()["model"]})}, weights=bool(run_cfg.tracking.log_model_weights),
        )  # fmt: skip
    return path
