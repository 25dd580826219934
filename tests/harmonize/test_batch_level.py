"""Batch-level surgery (``harmonize.granularity: batch``) and the CAGrad rule, against brute force.

Brute force: each objective's plain gradient over every parameter from an uncut forward pass
(one ``autograd.grad`` per objective), then PCGrad (:func:`pcgrad_tasks`) or CAGrad (a dense grid
over the simplex) on the flattened shared-parameter gradients.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from cmgh import losses
from cmgh.errors import ConfigError
from cmgh.harmonize import Harmonizer, forward_losses, objective_cotangents, pcgrad_tasks, rules, upgrad
from cmgh.harmonize.rules import Gram
from cmgh.models import VATT
from tests.harmonize.test_ghost import small_batch, small_model
from tests.harmonize.tiny_vatt import make_batch, make_model, step_grads

TAU = 0.1
CONFLICTING_BATCH = {"ms": 4, "ma": 2}  # batch seeds on which the whole batch's two gradients conflict over the shared parameters


def objective_gradients(model: VATT, batch: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """``{"va": {name: grad}, "vt": {...}}``: each objective's plain gradient over every parameter (zeros where unreached)."""
    out = model(batch)
    valid = losses.text_valid(batch["text_mask"], batch["has_text"])
    l_va = losses.nce(out["z_va_video"], out["z_va_audio"], TAU)
    l_vt = losses.mil_nce(out["z_vat_video"], out["z_vat_text"], batch["text_mask"], TAU, valid=valid)
    obj = losses.objective(l_va, l_vt, valid, 1.0)
    names, params = zip(*model.named_parameters(), strict=True)
    grads = {}
    for key, term in (("va", obj.va), ("vt", obj.vt)):
        g = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        grads[key] = {n: torch.zeros_like(p) if x is None else x for n, p, x in zip(names, params, g, strict=True)}
    return grads


def harmonized_gradients(model: VATT, batch: dict[str, Tensor], harmonizer: Harmonizer) -> dict[str, Tensor]:
    model.zero_grad(set_to_none=True)
    fwd = forward_losses(model, batch, TAU)
    harmonizer.backward(fwd.video_rep, fwd.meet, fwd.l_va, fwd.l_vt, fwd.valid_vt, shared=harmonizer.shared_for(model))
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def cagrad_brute(g1: Tensor, g2: Tensor, c: float, rescale: bool = True) -> Tensor:
    """CAGrad's update (Liu et al. 2021, Alg. 1) for two gradients, the simplex searched on a dense grid, times 2."""
    g0 = (g1 + g2) / 2
    sqrt_phi = c * g0.norm()
    w = torch.linspace(0, 1, 200_001, dtype=g1.dtype)
    a, ab, b = g1 @ g1, g1 @ g2, g2 @ g2  # |g_w|^2 and g_w . g0 on the grid without materialising every g_w
    gw_sq = w * w * a + 2 * w * (1 - w) * ab + (1 - w) ** 2 * b
    best = float(w[int(torch.argmin(w * (g1 @ g0) + (1 - w) * (g2 @ g0) + sqrt_phi * gw_sq.sqrt()))])
    gw = best * g1 + (1 - best) * g2
    d = g0 + sqrt_phi / gw.norm() * gw
    return 2 * d / (1 + c**2) if rescale else 2 * d


@pytest.mark.parametrize("c", [0.0, 0.2, 0.5, 2.0])
def test_cagrad_coefficients_equal_the_brute_force_update(c: float) -> None:
    g = torch.Generator().manual_seed(3)
    g1, g2 = torch.randn(2, 9, generator=g, dtype=torch.float64)
    g2 = g2 - 1.2 * g1  # conflicting
    alpha, beta = rules.get("cagrad").coefficients(Gram.of(g1[None], g2[None]), cagrad_c=c)
    torch.testing.assert_close(alpha * g1 + beta * g2, cagrad_brute(g1, g2, c), rtol=1e-4, atol=1e-6)
    if c == 0.0:  # the mean, scaled back to the sum
        torch.testing.assert_close(alpha * g1 + beta * g2, g1 + g2)


def test_cagrad_leaves_a_row_with_one_gradient_alone() -> None:
    gram = Gram(torch.tensor([2.0, 1.0]), torch.tensor([0.0, 0.3]), torch.tensor([0.0, 4.0]))
    alpha, beta = rules.get("cagrad").coefficients(gram, cagrad_c=0.5)
    assert alpha[0] == 1 and beta[0] == 1 and (alpha[1] != 1 or beta[1] != 1)


@pytest.mark.parametrize("backbone", ["ms", "ma"])
@pytest.mark.parametrize("rule", ["pcgrad", "cagrad", "none"])
def test_batch_rule_over_all_parameters_equals_brute_force(backbone: str, rule: str) -> None:
    """Shared parameters get the rule applied to the two whole-batch gradients; every other parameter its plain gradient."""
    model, batch = small_model(backbone), small_batch(CONFLICTING_BATCH[backbone])
    ref = objective_gradients(model, batch)
    shared = list(model.shared_parameters())
    flat = {k: torch.cat([ref[k][n].reshape(-1) for n in shared]) for k in ref}
    assert float(flat["va"] @ flat["vt"]) < 0 or rule == "none", "the batch's two gradients should conflict on this seed"
    if rule == "pcgrad":
        expected_shared = pcgrad_tasks(torch.stack([flat["va"], flat["vt"]])[:, None])[0]
    elif rule == "cagrad":
        expected_shared = cagrad_brute(flat["va"], flat["vt"], 0.5)
    else:
        expected_shared = flat["va"] + flat["vt"]
    got = harmonized_gradients(model, batch, Harmonizer(rule, meeting_point="all_parameters", granularity="batch"))
    torch.testing.assert_close(torch.cat([got[n].reshape(-1) for n in shared]), expected_shared, rtol=1e-4, atol=1e-7)  # CAGrad reference: a grid step of 5e-6
    for name in got:
        if name not in shared:
            torch.testing.assert_close(got[name], ref["va"][name] + ref["vt"][name], rtol=1e-7, atol=1e-10, msg=name)


def test_batch_rule_at_the_representation_uses_the_whole_batch_gradient() -> None:
    """At the representation the batch's two gradients are the [B,D] matrices: PCGrad on them, flattened, then the backbone."""
    model, batch = small_model("ms"), small_batch(2)  # a batch whose two gradient matrices conflict
    fwd = forward_losses(model, batch, TAU)
    obj = losses.objective(fwd.l_va, fwd.l_vt, fwd.valid_vt, 1.0)
    g_va, g_vt = (torch.autograd.grad(t, fwd.meet, retain_graph=True)[0] for t in (obj.va, obj.vt))
    combined = pcgrad_tasks(torch.stack([g_va.reshape(-1), g_vt.reshape(-1)])[:, None])[0].reshape_as(g_va)
    model.zero_grad(set_to_none=True)
    torch.autograd.backward([obj.total, fwd.video_rep], [torch.ones_like(obj.total), combined])
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert float((g_va * g_vt).sum()) < 0, "the batch should conflict at the representation on this seed"
    got = harmonized_gradients(model, batch, Harmonizer("pcgrad", granularity="batch"))
    per_sample = harmonized_gradients(model, batch, Harmonizer("pcgrad"))
    name = "video_tok.proj.weight"
    assert name in expected and not torch.allclose(per_sample[name], expected[name])  # per-sample differs from batch-level
    for n in expected:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-7, atol=1e-10, msg=n)


def test_batch_granularity_config_errors() -> None:
    with pytest.raises(ConfigError, match="granularity"):
        Harmonizer("pcgrad", granularity="epoch")
    with pytest.raises(ConfigError, match="parameters"):
        Harmonizer("pcgrad", granularity="batch", meeting_point="parameters")
    with pytest.raises(ConfigError, match="random_partner"):
        Harmonizer("random_partner", granularity="batch")



@pytest.mark.parametrize("meeting_point", ["representation", "all_parameters"])
def test_the_trainer_step_runs_a_batch_rule(meeting_point: str) -> None:
    """Through train_step (the trainer's own path: the forward's cut, the shared parameters) the gradients are the rule's."""
    model, batch = make_model("ma"), make_batch()
    harmonizer = Harmonizer("cagrad", meeting_point=meeting_point, granularity="batch")
    expected = harmonized_gradients(model, batch, harmonizer)
    got, _ = step_grads(model, batch, harmonizer)
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], msg=name)


def test_instance_upgrad_feeds_the_backbone_the_upgrad_combination_of_every_terms_gradient() -> None:
    """granularity instance: the 2B (sample, objective) terms' gradients at the representation, one at a time, UPGrad-weighted."""
    model, batch = small_model("ms"), small_batch(2)
    fwd = forward_losses(model, batch, TAU)
    c_va, c_vt = objective_cotangents(fwd.valid_vt, 1.0)
    terms = upgrad.instance_terms(fwd.l_va, fwd.l_vt, c_va, c_vt)
    rows = torch.stack([torch.autograd.grad(t, fwd.meet, retain_graph=True, allow_unused=True)[0].reshape(-1) for t in terms])
    w = upgrad.upgrad_weights(rows @ rows.T, reg_eps=upgrad.INSTANCE_REG_EPS)
    assert float((rows @ rows.T @ w).min()) >= -1e-6 * float((rows @ rows.T).abs().max())  # no term's loss rises to first order
    combined = (w[:, None] * rows).sum(0).reshape_as(fwd.meet)
    obj = losses.objective(fwd.l_va, fwd.l_vt, fwd.valid_vt, 1.0)
    model.zero_grad(set_to_none=True)
    torch.autograd.backward([obj.total, fwd.video_rep], [torch.ones_like(obj.total), combined])
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    got = harmonized_gradients(model, batch, Harmonizer("upgrad", granularity="instance"))
    plain = harmonized_gradients(model, batch, Harmonizer("none"))
    assert not torch.allclose(got["video_tok.proj.weight"], plain["video_tok.proj.weight"])
    for n in expected:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-5, atol=1e-6, msg=n)  # the loop of single-row gradients differs ~1e-7
    with pytest.raises(ConfigError, match="instance"):
        Harmonizer("cmgh", granularity="instance")
    with pytest.raises(ConfigError, match="instance"):
        Harmonizer("upgrad", granularity="instance", meeting_point="all_parameters")
