"""Balancers inside the harmonized step: alternating steps touch only the chosen objective's gradients;
FAMO's multipliers scale each objective's plain gradient."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor

from cmgh import losses
from cmgh.harmonize import Harmonizer, forward_losses
from cmgh.harmonize.balance import Alternate, Famo
from cmgh.models import VATT
from tests.harmonize.test_batch_level import TAU, objective_gradients
from tests.harmonize.test_ghost import small_batch, small_model


def step_gradients(model: VATT, batch: dict[str, Tensor], harmonizer: Harmonizer, step: int) -> dict[str, Tensor | None]:
    model.zero_grad(set_to_none=True)
    fwd = forward_losses(model, batch, TAU)
    harmonizer.backward(fwd.video_rep, fwd.meet, fwd.l_va, fwd.l_vt, fwd.valid_vt, step=step)
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("backbone", ["ms", "ma"])
def test_an_alternating_step_touches_only_its_objective(backbone: str) -> None:
    model, batch = small_model(backbone), small_batch()
    ref = objective_gradients(model, batch)
    harmonizer = Harmonizer("cmgh", balancer=Alternate(va_share=0.5))  # cycle: va on even steps, vt on odd ones
    for step, chosen, other in ((0, "va", "vt"), (1, "vt", "va")):
        got = step_gradients(model, batch, harmonizer, step)
        only_other = [n for n in got if not ref[chosen][n].any() and ref[other][n].any()]
        assert only_other, "some parameters are reached by one objective only"
        for name, grad in got.items():
            if name in only_other:
                assert grad is None, f"{name} belongs to the other objective and must get no gradient (AdamW then skips it)"
            elif grad is not None:
                torch.testing.assert_close(grad, ref[chosen][name], rtol=1e-7, atol=1e-10, msg=name)


def test_famo_scales_each_objective_by_its_multiplier() -> None:
    model, batch = small_model("ms"), small_batch()
    ref = objective_gradients(model, batch)
    famo = Famo()
    famo.weights(0, 4.0, 2.0)  # a history: the next call updates the logits from these losses
    predictor = copy.deepcopy(famo)
    harmonizer = Harmonizer("none", balancer=famo)
    fwd = forward_losses(model, batch, TAU)
    obj = losses.objective(fwd.l_va.detach(), fwd.l_vt.detach(), fwd.valid_vt, 1.0)
    m_va, m_vt = predictor.weights(1, float(obj.va), float(obj.vt))
    assert abs(m_va - m_vt) > 1e-3  # the losses differ, so the multipliers do
    got = step_gradients(model, batch, harmonizer, 1)
    for name, grad in got.items():
        if grad is not None:
            torch.testing.assert_close(grad, m_va * ref["va"][name] + m_vt * ref["vt"][name], rtol=1e-5, atol=1e-6, msg=name)  # FAMO works in float32
    torch.testing.assert_close(famo.logits, predictor.logits)  # the step's balancer took the same update
