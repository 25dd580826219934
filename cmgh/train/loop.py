"""The pre-training loop: one variant, one backbone, one seed -> checkpoint + per-step log.

Everything a resumed run needs is in the checkpoint (model, optimizer, scheduler, RNG states,
harmonizer/curriculum state, data position, NaN counter), so ``resume=True`` continues to the
same result as an uninterrupted run. The loop knows nothing about Snakemake or MLflow: it
reports through a :class:`cmgh.track.Tracker`.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from cmgh import config as config_mod
from cmgh.config import Config
from cmgh.data.datasets import ShardedClips, collate
from cmgh.data.features import feature_dir, vocab_path
from cmgh.data.text import Vocabulary
from cmgh.errors import CmghError
from cmgh.harmonize import Harmonizer, StepStats, forward_losses
from cmgh.io import atomic_write_json, atomic_write_text
from cmgh.models import build_model
from cmgh.track import NullTracker, Tracker
from cmgh import checkpoint as ckpt
from cmgh.train import distributed
from cmgh.train.batches import BatchStream, Position
from cmgh.train.precision import autocast
from cmgh.train.schedule import build_scheduler

log = logging.getLogger(__name__)

TRAIN_LOG = "train_log.jsonl"
PARTIAL_LOG = "train_log.partial.jsonl"  # the log of a run in progress (see cmgh.checkpoint)
SCORES_DIR = "scores"
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


class TrainingError(CmghError):
    """Training cannot go on (e.g. too many non-finite losses in a row)."""


@dataclass(frozen=True)
class RunSpec:
    backbone: str
    variant: str
    seed: int
    out: Path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pretrain_dataset(cfg: Config) -> ShardedClips:
    """HowTo100M-style triplets (VATT also mixes AudioSet pairs at paper scale: rows without text)."""
    return ShardedClips(feature_dir(cfg, "howto100m"), modalities=("video", "audio", "text"))


def step_metrics(stats: StepStats, valid_vt: torch.Tensor, lr: float, samples_per_s: float) -> dict[str, float]:
    """Per-step statistics: both losses and the distribution of the per-sample conflict cosine.

    The cosine statistics cover rows with text only (rows without text have nothing to conflict).
    """
    obj = stats.objective
    cos = stats.cosine.float()[valid_vt.bool()]
    if cos.numel() == 0:
        cos = torch.zeros(1)
    metrics = {
        "loss": float(obj.total),
        "loss_va": float(obj.va),
        "loss_vt": float(obj.vt),
        "lr": lr,
        "samples_per_s": samples_per_s,
        "conflict_fraction": stats.conflict_fraction,
        "cos_mean": float(cos.mean()),
        "kept_fraction": 1.0 if stats.weights is None else stats.weights.kept_fraction,
        "keep_target": 1.0 if stats.weights is None else stats.weights.keep,
    }
    for q, value in zip(QUANTILES, torch.quantile(cos, torch.tensor(QUANTILES)).tolist()):
        metrics[f"cos_q{int(q * 100):02d}"] = float(value)
    return metrics


def _dump_scores(out: Path, step: int, item_ids: list[str], stats: StepStats, l_va: torch.Tensor, l_vt: torch.Tensor) -> None:
    """Per-sample scores of one batch at a configured step (histograms, noise detection over training)."""
    table = pd.DataFrame(
        {
            "step": step,
            "item_id": item_ids,
            "cos": stats.cosine.float().numpy(),
            "cos_representation": stats.cosine_representation.float().numpy(),
            "loss_va": l_va.detach().float().numpy(),
            "loss_vt": l_vt.detach().float().numpy(),
            "kept": (torch.ones_like(stats.cosine, dtype=torch.bool) if stats.weights is None else stats.weights.kept).numpy(),
        }
    )
    atomic_write_text(out / SCORES_DIR / f"step_{step:06d}.csv", table.to_csv(index=False))


def _read_log(path: Path, before_step: int) -> list[str]:
    """Lines of an existing log for steps before ``before_step`` (a resumed run rewrites the rest)."""
    if not path.exists():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] < before_step:
                kept.append(line)
        except (ValueError, KeyError):
            continue
    return kept


def fingerprint(cfg: Config, spec: RunSpec) -> str:
    """Hash of what a run computes; a saved state with another fingerprint is not resumed."""
    import hashlib

    keys = {**config_mod.training_inputs(cfg), "run": [spec.backbone, spec.variant, spec.seed]}
    return hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _resumable_state(out: Path, expected: str) -> dict[str, Any] | None:
    path = ckpt.latest(out)
    if not path.exists():
        return None
    state = ckpt.load(path)
    found = state.get("meta", {}).get("fingerprint")
    if found != expected:
        log.warning("%s: saved with another configuration (fingerprint %s, now %s); starting from step 0", path, found, expected)
        return None
    return state


def pretrain(
    cfg: Config,
    spec: RunSpec,
    *,
    resume: bool = True,
    tracker: Tracker | None = None,
    stop_after: int | None = None,
    on_step: Callable[[int, torch.nn.Module], None] | None = None,
) -> Path:
    """Train one variant; returns the path of its newest state (checkpoint.pt once finished). ``stop_after`` ends early (tests, sweeps).

    ``on_step(steps_done, model)`` runs after every optimizer step, once that step's checkpoint (if
    any) is written; an exception it raises (e.g. ``optuna.TrialPruned``) ends the run, checkpoint kept.
    """
    tracker = tracker or NullTracker()
    cfg = config_mod.for_variant(cfg, spec.variant)
    dist_info = distributed.init_from_env()
    device = distributed.device_for(dist_info)
    out = spec.out
    out.mkdir(parents=True, exist_ok=True)
    pcfg = cfg.pretrain
    if dist_info.is_main:
        cfg.write(out)

    seed_everything(spec.seed)
    vocab = Vocabulary.load(vocab_path(cfg))
    dataset = pretrain_dataset(cfg)
    stream = BatchStream(dataset, int(pcfg.batch_size), spec.seed, dist_info.rank, dist_info.world_size)
    model = build_model(cfg, spec.backbone, vocab_size=len(vocab)).to(device)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "pos" in name or "agg" in name else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": float(pcfg.weight_decay)}, {"params": no_decay, "weight_decay": 0.0}],
        lr=float(pcfg.lr),
        betas=tuple(pcfg.betas),
        eps=float(pcfg.eps),
        fused=device.type == "cuda",
    )
    total = int(pcfg.steps)
    scheduler = build_scheduler(optimizer, float(pcfg.lr), float(pcfg.min_lr), int(pcfg.warmup_steps), total)
    harmonizer = Harmonizer.from_config(cfg.to_dict()["pretrain"])
    if pcfg.compile:
        # In place (nn.Module.compile): the trainer calls encode/heads, not forward, and the
        # state_dict keys stay those of the plain model, so checkpoints are interchangeable.
        model.backbone.compile()
        model.head.compile()

    start, nonfinite_run, nonfinite_total = 0, 0, 0
    run_fingerprint = fingerprint(cfg, spec)
    state = _resumable_state(out, run_fingerprint) if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        harmonizer.load_state_dict(state["harmonizer"])
        stream.position = Position.from_state(state["position"])
        ckpt.set_rng_state(state["rng"])
        start, nonfinite_run, nonfinite_total = int(state["step"]), int(state["nonfinite_run"]), int(state["nonfinite_total"])
        log.info("resuming %s from step %d", out, start)
    previous_log = out / PARTIAL_LOG if (out / PARTIAL_LOG).is_file() else out / TRAIN_LOG
    log_lines = _read_log(previous_log, start) if dist_info.is_main and start else []

    def save(step: int) -> None:
        """The final state as checkpoint.pt + train_log.jsonl; any other as resume.pt + the partial log."""
        if not dist_info.is_main:
            return
        finished = step == total
        ckpt.save(
            out,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "harmonizer": harmonizer.state_dict(),
                "position": stream.position.state_dict(),
                "rng": ckpt.rng_state(),
                "step": step,
                "nonfinite_run": nonfinite_run,
                "nonfinite_total": nonfinite_total,
                "meta": {"backbone": spec.backbone, "variant": spec.variant, "seed": spec.seed, "vocab_size": len(vocab),
                         "steps": total, "fingerprint": run_fingerprint},
            },
            name=ckpt.CHECKPOINT if finished else ckpt.RESUME,
        )
        atomic_write_text(out / (TRAIN_LOG if finished else PARTIAL_LOG), "".join(f"{line}\n" for line in log_lines))
        if finished:
            for stale in (out / ckpt.RESUME, out / PARTIAL_LOG):
                stale.unlink(missing_ok=True)
        tracker.flush()  # the tracker then holds every step the checkpoint covers (no gap on resume)

    # Under torchrun the losses see the global batch's negatives (VATT); one process needs nothing.
    gather = distributed.RowGather(dist_info, stream.global_batch // dist_info.world_size) if dist_info.enabled else None
    end = total if stop_after is None else min(total, stop_after)
    model.train()
    bar = tqdm(range(start, end), desc=f"pretrain {spec.backbone}/{spec.variant}/seed{spec.seed}", disable=not sys.stderr.isatty(), leave=False)
    for step in bar:
        tick = time.perf_counter()
        indices = stream.next_indices()
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in stream_batch(dataset, indices).items()}
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, str(pcfg.precision)):
            fwd = forward_losses(model, batch, float(pcfg.temperature), harmonizer.hidden_blocks, gather=gather)
        tail = model.video_tail(harmonizer.parameter_blocks) if harmonizer.meeting_point == "parameters" else None
        stats = harmonizer.backward(fwd.video_rep, fwd.meet, fwd.l_va, fwd.l_vt, fwd.valid_vt, step=step, tail=tail, hidden=fwd.hidden)
        if not distributed.all_true(bool(torch.isfinite(stats.objective.total)), dist_info):
            nonfinite_run += 1
            nonfinite_total += 1
            optimizer.zero_grad(set_to_none=True)
            log.warning("step %d: non-finite loss, skipped (%d in a row)", step, nonfinite_run)
            if nonfinite_run >= int(pcfg.max_nonfinite_steps):
                save(step)
                raise TrainingError(
                    f"{out}: {nonfinite_run} non-finite losses in a row at step {step} "
                    f"(lower pretrain.lr or check the data); checkpoint kept for inspection"
                )
            continue  # the schedule does not advance over a skipped step
        nonfinite_run = 0
        distributed.average_gradients([p for p in model.parameters()], dist_info)
        if float(pcfg.grad_clip) > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(pcfg.grad_clip))
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        elapsed = time.perf_counter() - tick
        metrics = step_metrics(stats, fwd.valid_vt, lr, len(indices) * dist_info.world_size / max(elapsed, 1e-9))
        metrics = distributed.mean_over_ranks(metrics, dist_info)
        metrics["samples_per_s"] = len(indices) * dist_info.world_size / max(elapsed, 1e-9)
        metrics["nonfinite_total"] = nonfinite_total
        if dist_info.is_main:
            log_lines.append(json.dumps({"step": step, **metrics}))
            tracker.log_metrics(metrics, step=step)
            if step % int(pcfg.score_every) == 0 or step == total - 1:
                ids = dataset.index["item_id"].iloc[indices].tolist()
                _dump_scores(out, step, ids, stats, fwd.l_va, fwd.l_vt)
        if (step + 1) % int(pcfg.checkpoint_every) == 0 or step + 1 == end:
            save(step + 1)
        if on_step is not None:
            on_step(step + 1, model)
    bar.close()
    if end == total and dist_info.is_main:
        summary = _summary(out, log_lines, spec, total, nonfinite_total)
        atomic_write_json(out / "summary.json", summary)
        tracker.log_artifact(out / TRAIN_LOG)
        tracker.log_artifact(out / "summary.json")
        tracker.log_artifact(out / SCORES_DIR)
    distributed.cleanup(dist_info)
    return ckpt.latest(out)


def stream_batch(dataset: ShardedClips, indices: list[int]) -> dict[str, Any]:
    return collate([dataset[i] for i in indices])


def _summary(out: Path, lines: list[str], spec: RunSpec, total: int, nonfinite: int) -> dict[str, Any]:
    rows = [json.loads(line) for line in lines]
    last = rows[-10:] if rows else []

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in last])) if last else float("nan")

    return {
        "backbone": spec.backbone,
        "variant": spec.variant,
        "seed": spec.seed,
        "steps": total,
        "nonfinite_steps": nonfinite,
        "final_loss_va": mean("loss_va"),
        "final_loss_vt": mean("loss_vt"),
        "first_loss_va": rows[0]["loss_va"] if rows else float("nan"),
        "first_loss_vt": rows[0]["loss_vt"] if rows else float("nan"),
        "mean_conflict_fraction": float(np.mean([r["conflict_fraction"] for r in rows])) if rows else float("nan"),
    }


def load_metrics_log(out: Path) -> pd.DataFrame:
    path = Path(out) / TRAIN_LOG
    return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])


def read_checkpoint_meta(path: Path) -> Mapping[str, Any]:
    return ckpt.load(path)["meta"]
