"""The one training step: an update with the schedule advanced, or (non-finite loss) no update at all."""

from __future__ import annotations

import torch

from cmgh.harmonize import Harmonizer
from cmgh.train.schedule import build_scheduler
from cmgh.train.step import step_metrics, train_step
from tests.harmonize.tiny_vatt import TAU, make_batch, make_model


def parts(lr: float = 1e-3) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    return model, optimizer, build_scheduler(optimizer, lr, lr / 10, 2, 10)


def test_a_finite_step_updates_clips_and_advances_the_schedule() -> None:
    model, optimizer, scheduler = parts()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    lr = optimizer.param_groups[0]["lr"]
    result = train_step(model, make_batch(), optimizer, scheduler, Harmonizer("cmgh"), step=0, temperature=TAU, grad_clip=0.5)
    assert result.finite and result.lr == lr
    assert scheduler.last_epoch == 1 and optimizer.param_groups[0]["lr"] != lr
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    assert norm <= 0.5 + 1e-6  # .grad holds the clipped gradient the update used
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    metrics = step_metrics(result, samples_per_s=1.0)
    assert metrics["lr"] == lr and 0 <= metrics["conflict_fraction"] <= 1 and "cos_q50" in metrics


def test_a_non_finite_step_changes_nothing() -> None:
    model, optimizer, scheduler = parts()
    batch = make_batch()
    batch["audio"] = torch.full_like(batch["audio"], float("nan"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train_step(model, batch, optimizer, scheduler, Harmonizer("cmgh"), step=0, temperature=TAU, grad_clip=1.0)
    assert not result.finite
    assert scheduler.last_epoch == 0 and not optimizer.state
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
