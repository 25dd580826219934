"""Per-sample gradients at the meeting point and the single harmonized backward pass.

Whole steps go through the trainer's own :func:`cmgh.train.step.train_step` (with a zero learning
rate, so that the gradients it leaves in ``.grad`` can be compared and the model stays put).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

from cmgh import losses
from cmgh.harmonize.curriculum import Curriculum
from cmgh.harmonize import (
    Harmonizer,
    forward_losses,
    objective_cotangents,
    parameter_gradients,
    per_sample_gradients,
)
from cmgh.models import VATT
from tests.harmonize.tiny_vatt import TAU, make_batch, make_model, step_grads


def plain_grads(model: VATT, batch: dict, w: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    z = model(batch)
    valid = losses.text_valid(batch["text_mask"], batch["has_text"])
    l_va = losses.nce(z["z_va_video"], z["z_va_audio"], TAU)
    l_vt = losses.mil_nce(z["z_vat_video"], z["z_vat_text"], batch["text_mask"], TAU, valid)
    losses.objective(l_va, l_vt, valid, 0.7, w, w).total.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_cheap_gradients_equal_torch_func_for_separable_loss() -> None:
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    rep = torch.randn(6, 8, requires_grad=True)
    target = torch.randn(6, 4)
    l1 = ((head(rep) - target) ** 2).sum(-1)
    l2 = head(rep).sin().sum(-1)
    g1, g2 = per_sample_gradients(l1, l2, rep)
    params = dict(head.named_parameters())
    ref1 = vmap(grad(lambda r, t: ((functional_call(head, params, (r[None],)) - t) ** 2).sum()))(rep, target)
    ref2 = vmap(grad(lambda r: functional_call(head, params, (r[None],)).sin().sum()))(rep)
    torch.testing.assert_close(g1, ref1)
    torch.testing.assert_close(g2, ref2)
    e1, _ = per_sample_gradients(l1, l2, rep, exact=True)  # separable: exact == cheap
    torch.testing.assert_close(e1, g1)


def test_batch_coupled_cheap_is_column_sum_exact_is_diagonal() -> None:
    torch.manual_seed(0)
    head = nn.Linear(8, 6)
    rep = torch.randn(5, 8, requires_grad=True)
    other = torch.randn(5, 6)
    c = torch.rand(5)

    def loss_fn(r: torch.Tensor) -> torch.Tensor:
        return losses.nce(head(r), other, TAU)

    l = loss_fn(rep)
    cheap, _ = per_sample_gradients(l, l, rep, c, c)
    exact, _ = per_sample_gradients(l, l, rep, c, c, exact=True)
    jac = jacrev(loss_fn)(rep.detach()) * c[:, None, None]  # [B(loss j), B(sample i), D]
    torch.testing.assert_close(cheap, jac.sum(0))  # d(sum_j c_j l_j)/d rep_i
    torch.testing.assert_close(exact, jac.diagonal(dim1=0, dim2=1).T)  # c_i dl_i/d rep_i
    assert not torch.allclose(cheap, exact)


@pytest.mark.parametrize("backbone", ["ms", "ma"])
def test_rule_none_equals_plain_backward(backbone: str) -> None:
    model, batch = make_model(backbone), make_batch()
    ref = plain_grads(model, batch)
    got, stats = step_grads(model, batch, Harmonizer("none", vt_weight=0.7))
    assert set(got) == set(ref)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], atol=1e-6, rtol=1e-5, msg=name)
    assert stats.weights is None or stats.weights.kept_fraction == 1.0


def test_rule_none_with_curriculum_equals_plain_weighted_backward() -> None:
    model, batch = make_model(), make_batch()
    cur = Curriculum("cmgh", "conflict", "triplet", "constant", 0, 0.5, 0.5, 10, vt_weight=0.7)
    got, stats = step_grads(model, batch, Harmonizer("none", vt_weight=0.7, curriculum=cur))
    w = stats.weights.w_va
    assert 0 < stats.weights.kept_fraction < 1 and (w == 0).any()
    ref = plain_grads(model, batch, w)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], atol=1e-6, rtol=1e-5, msg=name)


def test_cmgh_leaves_audio_text_towers_and_heads_unchanged() -> None:
    model, batch = make_model("ms"), make_batch()
    ref = plain_grads(model, batch)
    got, stats = step_grads(model, batch, Harmonizer("cmgh", vt_weight=0.7))
    assert stats.conflict_fraction > 0
    video_changed = False
    for name in ref:
        if name.startswith(("audio_tok", "text_tok", "backbone.nets.audio", "backbone.nets.text", "backbone.agg.audio",
                            "backbone.agg.text", "head.")):
            torch.testing.assert_close(got[name], ref[name], atol=1e-6, rtol=1e-5, msg=name)
        elif name.startswith(("video_tok", "backbone.nets.video")):
            video_changed |= not torch.allclose(got[name], ref[name], atol=1e-6)
    assert video_changed


def test_rows_without_text_receive_only_g_va() -> None:
    model, batch = make_model(), make_batch()
    fwd = forward_losses(model, batch, TAU)
    c_va, c_vt = objective_cotangents(fwd.valid_vt, 1.0)
    g_va, g_vt = per_sample_gradients(fwd.l_va, fwd.l_vt, fwd.meet, c_va, c_vt)
    assert (g_vt[~fwd.valid_vt] == 0).all()
    seen = {}
    fwd.video_rep.register_hook(lambda g: seen.setdefault("g", g))
    Harmonizer("cmgh").backward(fwd.video_rep, fwd.meet, fwd.l_va, fwd.l_vt, fwd.valid_vt)
    torch.testing.assert_close(seen["g"][~fwd.valid_vt], g_va[~fwd.valid_vt])


@pytest.mark.parametrize("backbone", ["ms", "ma"])
def test_parameter_gradients_sum_to_tail_gradient(backbone: str) -> None:
    model, batch = make_model(backbone).eval(), make_batch()
    fwd = forward_losses(model, batch, TAU, hidden_blocks=1)
    g_va, g_vt = per_sample_gradients(fwd.l_va, fwd.l_vt, fwd.meet)
    tail = model.video_tail(1)
    p_va, p_vt = parameter_gradients(tail, fwd.hidden, [g_va, g_vt])
    params = list(tail.parameters())
    assert p_va.shape == (8, sum(p.numel() for p in params))
    ref = torch.autograd.grad(fwd.video_rep, params, grad_outputs=g_va, retain_graph=True)
    torch.testing.assert_close(p_va.sum(0), torch.cat([r.flatten() for r in ref]), atol=1e-5, rtol=1e-4)
    row = torch.autograd.grad(fwd.video_rep[3], params, grad_outputs=g_vt[3], retain_graph=True)
    torch.testing.assert_close(p_vt[3], torch.cat([r.flatten() for r in row]), atol=1e-5, rtol=1e-4)


def test_parameters_meeting_point_step() -> None:
    model, batch = make_model("ma"), make_batch()
    cur = Curriculum("cmgh", "conflict", "loss", "constant", 0, 0.5, 0.5, 10)
    harm = Harmonizer("cmgh", meeting_point="parameters", parameter_blocks=1, curriculum=cur)
    assert harm.hidden_blocks == 1
    got, stats = step_grads(model, batch, harm)
    assert stats.cosine.shape == (8,) and (stats.cosine.abs() <= 1 + 1e-6).all()
    assert (stats.cosine[~losses.text_valid(batch["text_mask"], batch["has_text"])] == 0).all()
    assert not torch.allclose(stats.cosine, stats.cosine_representation)
    assert (stats.weights.w_va == 1).all() and (stats.weights.w_vt == 0).any()  # loss granularity keeps VA
    assert all(torch.isfinite(g).all() for g in got.values())


def test_loss_scorer_and_exact_mode_run() -> None:
    model, batch = make_model(), make_batch()
    cur = Curriculum("cmgh", "loss", "triplet", "linear", 0, 0.5, 0.5, 10)
    harm = Harmonizer("pcgrad", curriculum=cur, exact=True)
    got, stats = step_grads(model, batch, harm)
    assert stats.weights.kept.sum() < 8 and all(torch.isfinite(g).all() for g in got.values())


def test_gradvac_state_round_trip(tiny_config) -> None:
    model, batch = make_model(), make_batch()
    pre = tiny_config.to_dict()["pretrain"]
    pre["harmonize"]["rule"] = "gradvac"
    harm = Harmonizer.from_config(pre)
    step_grads(model, batch, harm)
    state = harm.state_dict()
    assert "phi_hat" in state["rule_state"]
    fresh = Harmonizer.from_config(pre)
    fresh.load_state_dict(state)
    assert fresh.state == harm.state
    Harmonizer.from_config(tiny_config.pretrain)  # a Config view works as well


@pytest.mark.parametrize(("backbone", "meeting_point"), [("ms", "representation"), ("ma", "all_parameters")])
def test_a_clip_without_audio_is_masked_like_one_without_text(backbone: str, meeting_point: str) -> None:
    """A silent row (``has_audio`` False) gets no video-audio loss, is no negative of the others, leaves the
    L_va average, receives only its video-text gradient, and is neither scored nor curated."""
    model, batch = make_model(backbone), make_batch()
    silent = 2  # captioned, so only its audio is missing
    has_audio = torch.ones(8, dtype=torch.bool)
    has_audio[silent] = False
    fwd = forward_losses(model, {**batch, "has_audio": has_audio}, TAU)
    assert fwd.valid_va.tolist() == has_audio.tolist() and float(fwd.l_va[silent]) == 0.0
    keep = [i for i in range(8) if i != silent]
    z = fwd.outputs
    alone = losses.nce(z["z_va_video"][keep], z["z_va_audio"][keep], TAU)  # the batch without the silent row at all
    torch.testing.assert_close(fwd.l_va[keep], alone, atol=1e-5, rtol=1e-5)
    assert forward_losses(model, {**batch, "has_audio": torch.ones(8, dtype=torch.bool)}, TAU).valid_va is None  # all audio: as before
    cur = Curriculum("cmgh", "conflict", "triplet", "constant", 0, 0.5, 0.5, 10)
    harm = Harmonizer("cmgh", meeting_point=meeting_point, curriculum=cur)
    _, stats = step_grads(model, {**batch, "has_audio": has_audio}, harm)
    assert float(stats.cosine[silent]) == 0.0 and bool(stats.weights.kept[silent])  # not compared, never dropped
    valid = losses.text_valid(batch["text_mask"], batch["has_text"])
    va = losses.objective(fwd.l_va, fwd.l_vt, valid, 1.0, valid_va=has_audio).va
    torch.testing.assert_close(va, fwd.l_va[keep].mean())
    c_va, _ = objective_cotangents(valid, 1.0, valid_va=has_audio)
    assert float(c_va[silent]) == 0.0 and float(c_va.sum()) == pytest.approx(1.0)


def test_all_audio_steps_are_bit_identical_to_batches_that_say_nothing() -> None:
    model, batch = make_model("ma"), make_batch()
    harm = Harmonizer("cmgh", curriculum=Curriculum("cmgh", "conflict", "triplet", "constant", 0, 0.5, 0.5, 10))
    a, _ = step_grads(model, batch, harm)
    b, _ = step_grads(model, {**batch, "has_audio": torch.ones(8, dtype=torch.bool)}, harm)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_triplet_own_gradients_warn_that_the_update_omits_the_negatives(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.WARNING, logger="cmgh.harmonize.harmonizer"):
        Harmonizer("cmgh", per_sample="own")
    assert "per_sample: own is a known defect: the backbone's update omits the cross-sample (negative) terms" in caplog.text
    # the defect itself: with no rule at all, the backbone's gradient is not the plain one
    model, batch = make_model("ms"), make_batch()
    plain, _ = step_grads(model, batch, Harmonizer("none"))
    own, _ = step_grads(model, batch, Harmonizer("none", per_sample="own"))
    video = [k for k in plain if k.startswith("backbone.nets.video")]
    assert video and not all(torch.allclose(plain[k], own[k], atol=1e-6) for k in video)
