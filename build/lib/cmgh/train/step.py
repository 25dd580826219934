"""ONE training step: forward, harmonized backward, gradient averaging and clipping, optimizer and schedule step.

The loop calls :func:`train_step` for every batch, and ``benchmarks/train_step.py`` times this
same function, so the measured cost of harmonization is the trainer's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cmgh.harmonize import ForwardOutput, Harmonizer, StepStats, forward_losses, ground_truth
from cmgh.train import distributed
from cmgh.train.precision import autocast

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
SINGLE_PROCESS = distributed.DistInfo()


@dataclass
class StepResult:
    """What one step computed; ``finite=False``: a rank saw a non-finite loss and no update was made."""

    stats: StepStats
    forward: ForwardOutput  # per-sample losses and the text mask (score dumps, metrics)
    lr: float  # the learning rate the update used (nan when skipped)
    finite: bool


def train_step(
    model: nn.Module,
    batch: Mapping[str, Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    harmonizer: Harmonizer,
    *,
    step: int,
    temperature: float,
    precision: str = "fp32",
    grad_clip: float = 0.0,
    dist_info: distributed.DistInfo = SINGLE_PROCESS,
    gather: distributed.RowGather | None = None,
) -> StepResult:
    """Forward cut at the meeting point, the harmonized backward, then the update.

    After the step the parameters' ``.grad`` hold the (averaged, clipped) gradients the update
    used. A non-finite objective on any rank skips the update on every rank (gradients cleared,
    schedule not advanced), so that ranks stay in step.
    """
    device = next(model.parameters()).device
    optimizer.zero_grad(set_to_none=True)
    ghost = harmonizer.ghost_for(model)
    with autocast(device, precision), ghost.recording(batch["video"].shape[0]) if ghost else nullcontext():
        detach = ghost.meeting_keys if ghost else ("video_rep",)
        fwd = forward_losses(model, batch, temperature, harmonizer.hidden_blocks, gather=gather, detach=detach)
    tail = model.video_tail(harmonizer.parameter_blocks) if harmonizer.meeting_point == "parameters" else None
    stats = harmonizer.backward(
        fwd.video_rep, fwd.meet, fwd.l_va, fwd.l_vt, fwd.valid_vt, step=step, tail=tail, hidden=fwd.hidden, ghost=ghost, cut=fwd.cut,
        truth=ground_truth(batch), valid_va=fwd.valid_va, shared=harmonizer.shared_for(model), ranks=distributed.Collectives(dist_info),
    )
    if not distributed.all_true(bool(torch.isfinite(stats.objective.total)), dist_info):
        optimizer.zero_grad(set_to_none=True)
        return StepResult(stats, fwd, float("nan"), finite=False)
    distributed.average_gradients(list(model.parameters()), dist_info)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return StepResult(stats, fwd, lr, finite=True)


def step_metrics(result: StepResult, samples_per_s: float) -> dict[str, float]:
    """Per-step statistics: both losses and the distribution of the per-sample conflict cosine.

    The cosine statistics cover rows with text and audio only (a row missing one has nothing to conflict).
    """
    stats = result.stats
    obj = stats.objective
    fwd = result.forward
    both = fwd.valid_vt.bool() if fwd.valid_va is None else fwd.valid_vt.bool() & fwd.valid_va.bool()
    cos = stats.cosine.float()[both]
    if cos.numel() == 0:
        cos = torch.zeros(1)
    metrics = {
        "loss": float(obj.total),
        "loss_va": float(obj.va),
        "loss_vt": float(obj.vt),
        "lr": result.lr,
        "samples_per_s": samples_per_s,
        "conflict_fraction": stats.conflict_fraction,
        "cos_mean": float(cos.mean()),
        "kept_fraction": 1.0 if stats.weights is None else stats.weights.kept_fraction,
        "keep_target": 1.0 if stats.weights is None else stats.weights.keep,
    }
    for q, value in zip(QUANTILES, torch.quantile(cos, torch.tensor(QUANTILES)).tolist(), strict=True):
        metrics[f"cos_q{int(q * 100):02d}"] = float(value)
    return metrics
