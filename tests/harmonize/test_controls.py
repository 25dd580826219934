"""Mechanism controls for realignment (norm_matched, random_partner) and triplet-own per-sample gradients."""

from __future__ import annotations

import pytest
import torch

from cmgh import losses
from cmgh.errors import ConfigError
from cmgh.harmonize import Harmonizer, get, objective_cotangents
from cmgh.harmonize.rules import Gram
from tests.harmonize.heads import problem


def grads(b: int = 64, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    g_va, g_vt = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    g_vt[:3] = 0.0  # rows without text
    return g_va, g_vt


@pytest.mark.parametrize("project", ["both", "vt", "va"])
def test_norm_matched_has_cmgh_norm_and_baseline_direction(project: str) -> None:
    g_va, g_vt = grads()
    matched = get("norm_matched")(g_va, g_vt, project=project)
    realigned = get("cmgh")(g_va, g_vt, project=project)
    plain = g_va + g_vt
    assert bool(((g_va * g_vt).sum(-1) < 0).any())
    torch.testing.assert_close(matched.norm(dim=1), realigned.norm(dim=1))
    cos = torch.nn.functional.cosine_similarity(matched, plain, dim=1)
    torch.testing.assert_close(cos, torch.ones_like(cos))
    no_conflict = (g_va * g_vt).sum(-1) >= 0
    torch.testing.assert_close(matched[no_conflict], plain[no_conflict])


@pytest.mark.parametrize("project", ["both", "vt", "va"])
def test_random_partner_projects_cmgh_rows_onto_another_rows_gradients(project: str) -> None:
    g_va, g_vt = grads()
    out = get("random_partner")(g_va, g_vt, project=project, step=3)
    plain = g_va + g_vt
    conflict = (g_va * g_vt).sum(-1) < 0
    changed = ~torch.isclose(out, plain).all(dim=1)
    assert changed.tolist() == conflict.tolist()  # exactly the rows cmgh projects: the same fraction
    candidates = [j for j in range(g_va.shape[0]) if g_vt[j].norm() > 0]

    def reject(g: torch.Tensor, onto: torch.Tensor) -> torch.Tensor:
        return g - (g @ onto) / (onto @ onto) * onto

    for i in conflict.nonzero().flatten().tolist():
        va = [reject(g_va[i], g_vt[j]) if project in ("both", "va") else g_va[i] for j in candidates]
        vt = [reject(g_vt[i], g_va[j]) if project in ("both", "vt") else g_vt[i] for j in candidates]
        matches = [j for j, a, b in zip(candidates, va, vt, strict=True) if torch.allclose(out[i], a + b, atol=1e-5)]
        assert matches and i not in matches, i  # a partner other than the row itself
    torch.testing.assert_close(get("random_partner")(g_va, g_vt, project=project, step=3), out)  # deterministic per step
    assert not torch.allclose(get("random_partner")(g_va, g_vt, project=project, step=4), out)


def test_vector_rules_refuse_all_parameters() -> None:
    with pytest.raises(ConfigError, match="random_partner.*all_parameters"):
        Harmonizer("random_partner", meeting_point="all_parameters")
    with pytest.raises(ConfigError, match="per_sample"):
        Harmonizer("cmgh", per_sample="mine")
    with pytest.raises(ConfigError, match="all_parameters"):
        get("random_partner").coefficients(Gram.of(*grads()))
    Harmonizer("norm_matched", meeting_point="all_parameters")  # a Gram rule runs there


def test_per_sample_config_key_reaches_the_exact_path(tiny_config) -> None:
    pretrain = tiny_config.to_dict()["pretrain"]
    assert pretrain["harmonize"]["per_sample"] == "batch_mixed" and not Harmonizer.from_config(pretrain).exact
    pretrain["harmonize"]["per_sample"] = "own"
    assert Harmonizer.from_config(pretrain).exact


def own_gradients_one_row_at_a_time(p, c_va: torch.Tensor, c_vt: torch.Tensor) -> torch.Tensor:
    """Brute force: row i is c_i d l_i / d rep_i with the other rows held fixed, summed over the two objectives."""
    rep0 = (p.x @ p.weight).detach()
    rows = []
    for i in range(rep0.shape[0]):
        row = rep0[i].clone().requires_grad_(True)
        rep = torch.cat([rep0[:i], row[None], rep0[i + 1 :]])
        l_va, l_vt = p.losses_at(rep)
        (g,) = torch.autograd.grad(c_va[i] * l_va[i] + c_vt[i] * l_vt[i], row)
        rows.append(g)
    return torch.stack(rows)


def test_per_sample_own_equals_brute_force_triplet_gradients() -> None:
    p = problem(no_text=(2,))
    c_va, c_vt = objective_cotangents(p.valid, 1.0)
    own = own_gradients_one_row_at_a_time(p, c_va, c_vt)
    grads_w = {}
    for per_sample in ("own", "batch_mixed"):
        video_rep, meet, l_va, l_vt = p.forward()
        Harmonizer("none", per_sample=per_sample).backward(video_rep, meet, l_va, l_vt, p.valid)
        grads_w[per_sample] = p.weight.grad.clone()
    torch.testing.assert_close(grads_w["own"], p.x.T @ own)  # the backbone receives sum_i x_i^T g_i(own)
    assert not torch.allclose(grads_w["own"], grads_w["batch_mixed"])
    video_rep, meet, l_va, l_vt = p.forward()
    losses.objective(l_va, l_vt, p.valid, 1.0).total.backward(inputs=[meet])
    torch.testing.assert_close(p.x.T @ meet.grad, grads_w["batch_mixed"])  # batch_mixed sums to the plain gradient
    video_rep, meet, l_va, l_vt = p.forward()
    Harmonizer("cmgh", per_sample="own").backward(video_rep, meet, l_va, l_vt, p.valid)
    assert p.weight.grad is not None and torch.isfinite(p.weight.grad).all()
