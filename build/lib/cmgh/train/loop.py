"""The pre-training loop: one variant, one backbone, one seed -> checkpoint + per-step log.

Set-up (:mod:`cmgh.train.setup`) builds the run's parts from the config, :class:`RunState`
(:mod:`cmgh.train.state`) saves and restores them, :func:`train_step` (:mod:`cmgh.train.step`)
is the one step; this module only walks the steps. With ``resume=True`` a run continues to the
same result as an uninterrupted one. The loop knows nothing about Snakemake or MLflow: it
reports through the :class:`cmgh.tracking.Tracker` it is handed (a tracked run is opened by
:mod:`cmgh.train.run`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cmgh import checkpoint as ckpt
from cmgh import config as config_mod
from cmgh.config import Config
from cmgh.data.stream import augment
from cmgh.errors import CmghError
from cmgh.tracking import NullTracker, Tracker, training_datasets
from cmgh.train import cost, distributed
from cmgh.train.setup import RunSpec, build, seed_everything
from cmgh.train.state import RunState, check_out, load_metrics_log, write_scores
from cmgh.train.step import step_metrics, train_step

__all__ = ["RunSpec", "TrainingError", "load_metrics_log", "pretrain", "seed_everything", "train"]

log = logging.getLogger(__name__)


class TrainingError(CmghError):
    """Training cannot go on (e.g. too many non-finite losses in a row)."""


def pretrain(cfg: Config, spec: RunSpec, *, resume: bool = True, **options: Any) -> Path:
    """Train one variant of the config tree ``cfg``; returns the path of its newest state
    (checkpoint.pt once finished). ``options`` are :func:`train`'s (tracker, stop_after, on_step).

    With ``resume`` the folder's run continues, and a run another configuration left there is
    refused (:func:`cmgh.train.state.check_out`); without it that run is deleted and replaced.
    """
    run_cfg = config_mod.for_variant(cfg, spec.variant)
    if resume:
        check_out(run_cfg, spec)  # before build() writes the folder's config.yaml
    return train(run_cfg, spec, resume=resume, **options)


def train(
    run_cfg: Config,
    spec: RunSpec,
    *,
    resume: bool = True,
    tracker: Tracker | None = None,
    stop_after: int | None = None,
    on_step: Callable[[int, torch.nn.Module], None] | None = None,
) -> Path:
    """:func:`pretrain` with the config already resolved for ``spec.variant`` and the resume guard
    already passed (:func:`cmgh.train.state.check_out`): the steps themselves. ``stop_after`` ends
    early (tests, sweeps); ``on_step(steps_done, model)`` runs after every optimizer step, once that
    step's checkpoint (if any) is written, and an exception it raises (e.g. ``optuna.TrialPruned``)
    ends the run, checkpoint kept."""
    tracker = tracker or NullTracker()
    run = build(run_cfg, spec)
    pcfg, dist_info, out, total = run.cfg.pretrain, run.dist, spec.out, run.total
    state = RunState(run, tracker)
    tracker.log_datasets(training_datasets(run.cfg))
    if resume:
        state.restore()
    else:
        state.clear()

    end = total if stop_after is None else min(total, stop_after)
    if state.start > end:  # a resumed run past the step asked for: nothing would be trained, and saying ok would be untrue
        raise TrainingError(f"{out}: the run is already at step {state.start}, past --stop-after {stop_after}; nothing trained "
                            "(resume without --stop-after, or start over with --restart)")
    run.model.train()
    bar = tqdm(range(state.start, end), desc=f"pretrain {spec.backbone}/{spec.variant}/seed{spec.seed}",
               disable=not sys.stderr.isatty(), leave=False)
    stream = run.stream(state.position)
    batches = run.batches(stream)
    tick = started = time.perf_counter()
    log_every = int(pcfg.log_every) or max(1, total // 10)
    for step in bar:
        loaded = next(batches)
        if loaded["step"] != step:
            raise TrainingError(f"{out}: the data stream delivered step {loaded['step']} for step {step} (loader workers out of order)")
        skipped = int(loaded.get("skipped", 0))  # this rank's substituted samples (the stream logs each)
        batch = {k: v.to(run.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in loaded.items()}
        if "jitter" in batch:  # the colour jitter the loader drew, applied on the training device
            batch["video"] = augment.apply_jitter(batch["video"], batch["jitter"])
        step_started = time.perf_counter()
        result = train_step(
            run.model, batch, run.optimizer, run.scheduler, run.harmonizer, step=step,
            temperature=float(pcfg.temperature), precision=str(pcfg.precision), grad_clip=float(pcfg.grad_clip),
            dist_info=dist_info, gather=run.gather,
        )
        step_time = cost.step_seconds(step_started, run.device)
        if not result.finite:
            state.skipped_total += skipped  # this rank's only: a skipped step has no collective to sum over
            state.nonfinite_run += 1
            state.nonfinite_total += 1
            log.warning("step %d: non-finite loss, skipped (%d in a row)", step, state.nonfinite_run)
            if state.nonfinite_run >= int(pcfg.max_nonfinite_steps):
                state.save(step, stream.position(step))
                raise TrainingError(
                    f"{out}: {state.nonfinite_run} non-finite losses in a row at step {step} "
                    f"(lower pretrain.lr or check the data); checkpoint kept for inspection"
                )
            continue  # the schedule does not advance over a skipped step
        state.nonfinite_run = 0
        now = time.perf_counter()
        elapsed, tick = now - tick, now  # step to step: the loader's waiting counts
        samples_per_s = len(loaded["item_id"]) * dist_info.world_size / max(elapsed, 1e-9)
        metrics = distributed.mean_over_ranks({**step_metrics(result, samples_per_s), "skipped_samples": float(skipped)}, dist_info)
        metrics["samples_per_s"] = samples_per_s
        metrics["step_time_s"] = step_time  # the step alone (no loader wait), this rank's: what a method costs
        metrics["peak_memory_mb"] = cost.peak_memory_mb(run.device)
        metrics["nonfinite_total"] = state.nonfinite_total
        state.skipped_total += round(metrics.pop("skipped_samples") * dist_info.world_size)  # summed over ranks
        metrics["skipped_total"] = state.skipped_total
        if dist_info.is_main:
            state.record(step, metrics)
            if (step + 1) % log_every == 0 or step + 1 == end:
                log.info(progress_line(spec, step, total, metrics, time.perf_counter() - started, step + 1 - state.start))
            if step % int(pcfg.score_every) == 0 or step == total - 1:
                write_scores(out, step, loaded, result.stats, result.forward.l_va, result.forward.l_vt)
        if (step + 1) % int(pcfg.checkpoint_every) == 0 or step + 1 == end:
            state.save(step + 1, stream.position(step + 1))
        if on_step is not None:
            on_step(step + 1, run.model)
    bar.close()
    if end == total and dist_info.is_main:
        state.finish()
    distributed.cleanup(dist_info)
    latest = ckpt.latest(out)
    if dist_info.is_main and not latest.is_file():
        raise TrainingError(f"{out}: no state was written (expected {latest.name}); the run did not train a step")
    return latest


def progress_line(spec: RunSpec, step: int, total: int, metrics: dict[str, float], elapsed: float, done: int) -> str:
    """``pretrain ms/gr/seed0: step 45/450 (10 %), loss 7.61 (va 3.46, vt 4.16), 21 samples/s, 2m10s left``."""
    left = elapsed / max(done, 1) * (total - step - 1)
    return (f"pretrain {spec.backbone}/{spec.variant}/seed{spec.seed}: step {step + 1}/{total} ({100 * (step + 1) / total:.0f} %), "
            f"loss {metrics['loss']:.3f} (va {metrics['loss_va']:.3f}, vt {metrics['loss_vt']:.3f}), "
            f"{metrics['samples_per_s']:.0f} samples/s, {int(left) // 60}m{int(left) % 60:02d}s left")
