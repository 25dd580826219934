"""UPGrad (Quinton & Rey 2024): its weights against independent solves, the two-objective rule against PCGrad,
and the instance Gramians against explicit Jacobians, torchjd's autogram Engine and our GhostGram."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor
from torchjd.aggregation import UPGradWeighting

from cmgh import losses
from cmgh.harmonize import ForwardOutput, Harmonizer, forward_losses, rules
from cmgh.harmonize import upgrad as U
from cmgh.harmonize.ghost import GhostGram
from cmgh.harmonize.gradients import leaf_gradients, objective_cotangents, per_sample_gradients
from cmgh.models import VATT
from tests.harmonize.tiny_vatt import TAU, make_batch, make_model, step_grads

B = 8

# vmap has no batching rule for CPU flash attention's backward: torch falls back to a loop and says so
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")


def gramian(m: int, n: int, seed: int, zero_rows: tuple[int, ...] = ()) -> Tensor:
    """``J J^T`` of ``m`` random rows in ``R^n`` (about half the pairs conflict); ``zero_rows`` are zero."""
    g = torch.Generator().manual_seed(seed)
    jac = torch.randn(m, n, generator=g, dtype=torch.float64) * torch.rand(m, 1, generator=g, dtype=torch.float64).add(0.2)
    jac[list(zero_rows)] = 0
    return jac @ jac.T


def brute_force_weights(g: np.ndarray, pref: np.ndarray) -> np.ndarray:
    """``sum_i argmin_{v >= pref_i e_i} v^T g v`` for a positive definite ``g``, by trying every free set.

    For ``v = u + x``: the free set ``F`` (``x_F > 0``) solves ``g_FF v_F = 0`` with ``v_F = u_F + x_F``;
    the KKT point is the one with ``x_F >= 0`` and ``(g v)_j >= 0`` off ``F`` (unique: ``g`` is definite).
    """
    m = len(pref)
    w = np.zeros(m)
    for i in range(m):
        u = np.zeros(m)
        u[i] = pref[i]
        found = None
        for size in range(m + 1):
            for free in itertools.combinations(range(m), size):
                f = list(free)
                x = np.zeros(m)
                if f:
                    x[f] = np.linalg.solve(g[np.ix_(f, f)], -(g @ u)[f])
                if (x >= -1e-12).all() and (g @ (u + x) >= -1e-12).all():
                    found = u + x
                    break
            if found is not None:
                break
        assert found is not None
        w += found
    return w


@pytest.mark.parametrize(("m", "seed"), [(2, 0), (3, 1), (5, 2), (6, 3), (6, 4)])
def test_weights_equal_a_brute_force_solve_over_active_sets(m: int, seed: int) -> None:
    g = gramian(m, m + 2, seed)
    assert (g < 0).any()  # something conflicts
    pref = torch.rand(m, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.1
    expected = brute_force_weights(g.numpy(), pref.numpy())
    got = U.upgrad_weights(g, pref, reg_eps=0.0)  # unregularised: the exact UPGrad of a definite Gramian
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-12)
    assert not np.allclose(expected, pref.numpy())  # the conflicts moved the weights


@pytest.mark.parametrize(
    ("m", "n", "zero_rows"),
    [(4, 10, ()), (8, 5, ()), (12, 40, (3, 7)), (16, 6, (0,)), (64, 200, (5, 9))],  # n < m: PSD-but-singular, regularised
)
def test_weights_equal_torchjd_upgrad_weighting(m: int, n: int, zero_rows: tuple[int, ...]) -> None:
    g = gramian(m, n, seed=m + n, zero_rows=zero_rows)
    expected = UPGradWeighting()(g)
    got = U.upgrad_weights(g)
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(U.upgrad_weights(g, solver="torchjd"), expected)
    for row in zero_rows:
        assert got[row] == 1.0 / m  # a zero row keeps its preference


@pytest.mark.parametrize(("m", "n"), [(30, 80), (40, 12)])
def test_weights_equal_scipy_nnls_on_the_cholesky_factor(m: int, n: int) -> None:
    """Each QP as a non-negative least squares: ``v = u_i + x``, ``v^T G v = |L^T (u_i + x)|^2`` (Lawson-Hanson, scipy)."""
    from scipy.optimize import nnls

    g = gramian(m, n, seed=m)
    pref = torch.rand(m, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    regularised = (g / g.trace() + U.REG_EPS * torch.eye(m, dtype=torch.float64)).numpy()
    a = np.linalg.cholesky(regularised).T
    expected = pref.numpy().copy()
    for i in range(m):
        expected += nnls(a, -pref[i].item() * a[:, i], maxiter=50 * m)[0]
    np.testing.assert_allclose(U.upgrad_weights(g, pref).numpy(), expected, rtol=1e-8, atol=1e-12)


def test_zero_rows_leave_the_other_weights_unchanged() -> None:
    g = gramian(10, 30, seed=5, zero_rows=(2, 6))
    pref = torch.linspace(0.05, 0.15, 10, dtype=torch.float64)
    keep = [i for i in range(10) if i not in (2, 6)]
    full = U.upgrad_weights(g, pref)
    reduced = U.upgrad_weights(g[keep][:, keep], pref[keep])
    torch.testing.assert_close(full[keep], reduced, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(full[[2, 6]], pref[[2, 6]])


def test_without_conflict_the_weights_are_the_preference() -> None:
    g = torch.Generator().manual_seed(0)
    jac = torch.rand(12, 20, generator=g, dtype=torch.float64)  # non-negative rows: every inner product >= 0
    gram = jac @ jac.T
    torch.testing.assert_close(U.upgrad_weights(gram), torch.full((12,), 1 / 12, dtype=torch.float64), rtol=0, atol=0)
    pref = torch.rand(12, generator=g, dtype=torch.float64)
    torch.testing.assert_close(U.upgrad_weights(gram, pref), pref, rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(4))
def test_the_update_conflicts_with_no_row(seed: int) -> None:
    """``<J^T w, g_k> = (G w)_k >= 0``: exactly unregularised, and for the regularised Gramian that torchjd's default solves."""
    g = gramian(24, 60, seed)
    w = U.upgrad_weights(g, reg_eps=0.0)
    assert float((g @ w).min()) >= -1e-12 * float(g.diagonal().max())
    plain = torch.full((24,), 1 / 24, dtype=torch.float64)
    assert float((g @ plain).min()) < 0  # the mean itself conflicts with some row
    regularised = g / g.trace() + U.REG_EPS * torch.eye(24, dtype=torch.float64)
    assert float((regularised @ U.upgrad_weights(g)).min()) >= -1e-12


def test_singular_gramian_needs_the_regulariser() -> None:
    g = gramian(6, 3, seed=0)
    with pytest.raises(ValueError, match="singular"):
        U.upgrad_weights(g, reg_eps=0.0)
    assert torch.isfinite(U.upgrad_weights(g)).all()


# -- the two-objective rule -------------------------------------------------------------------------------


def pair_gram(b: int = 64, d: int = 6, seed: int = 0) -> tuple[rules.Gram, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    g_va, g_vt = torch.randn(b, d, generator=g, dtype=torch.float64), torch.randn(b, d, generator=g, dtype=torch.float64)
    g_vt[3] = 0  # a sample without text
    return rules.Gram.of(g_va, g_vt), g_va, g_vt


def test_pair_weights_are_half_of_pcgrad_and_the_solver_agrees() -> None:
    gram, _, _ = pair_gram()
    conflict = gram.ab < 0
    assert 0 < int(conflict.sum()) < 64
    w_va, w_vt = U.pair_weights(gram)
    alpha, beta = rules.get("pcgrad").coefficients(gram)
    torch.testing.assert_close(w_va, alpha / 2, rtol=1e-14, atol=0)
    torch.testing.assert_close(w_vt, beta / 2, rtol=1e-14, atol=0)
    torch.testing.assert_close(w_va[conflict], 0.5 * (1 - gram.ab / gram.aa)[conflict])
    for i in range(64):  # each sample's 2x2 Gramian through the general (unregularised) solver
        g2 = torch.stack([torch.stack([gram.aa[i], gram.ab[i]]), torch.stack([gram.ab[i], gram.bb[i]])])
        torch.testing.assert_close(U.upgrad_weights(g2, reg_eps=0.0), torch.stack([w_va[i], w_vt[i]]), rtol=1e-10, atol=1e-12)


def test_upgrad_rule_is_pcgrad_and_cmgh_both_and_plain_without_conflict() -> None:
    gram, g_va, g_vt = pair_gram(seed=1)
    for a, b in zip(rules.get("upgrad").coefficients(gram), rules.get("cmgh").coefficients(gram, project="both"), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=0)
    torch.testing.assert_close(rules.get("upgrad")(g_va, g_vt), rules.get("pcgrad")(g_va, g_vt))
    flip = (g_va * g_vt).sum(-1) < 0
    g_vt = torch.where(flip[:, None], -g_vt, g_vt)
    torch.testing.assert_close(rules.get("upgrad")(g_va, g_vt), g_va + g_vt)


@pytest.mark.parametrize("meeting_point", ["representation", "all_parameters"])
def test_harmonizer_step_with_upgrad_equals_pcgrad(meeting_point: str) -> None:
    batch = make_batch(B)
    got, _ = step_grads(make_model("ma"), batch, Harmonizer("upgrad", meeting_point=meeting_point))
    expected, _ = step_grads(make_model("ma"), batch, Harmonizer("pcgrad", meeting_point=meeting_point))
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], msg=name)


# -- instance-wise UPGrad: the Gramians -------------------------------------------------------------------


def tiny(backbone: str) -> tuple[VATT, dict[str, Tensor]]:
    model = make_model(backbone).double()
    batch = make_batch(B)
    batch["audio"] = batch["audio"].double()
    return model, batch


def test_representation_gramian_equals_the_explicit_jacobian_gramian() -> None:
    model, batch = tiny("ms")
    fwd = forward_losses(model, batch, TAU)
    c_va, c_vt = objective_cotangents(fwd.valid_vt, 1.0)
    terms = U.instance_terms(fwd.l_va, fwd.l_vt, c_va, c_vt)
    reps = {k: fwd.outputs[k].detach() for k in ("audio_rep", "text_rep")}

    def terms_of(video_rep: Tensor) -> Tensor:
        z = model.heads({**reps, "video_rep": video_rep})
        l_va = losses.nce(z["z_va_video"], z["z_va_audio"], TAU)
        l_vt = losses.mil_nce(z["z_vat_video"], z["z_vat_text"], batch["text_mask"], TAU, valid=fwd.valid_vt)
        return U.instance_terms(l_va, l_vt, c_va, c_vt)

    torch.testing.assert_close(terms_of(fwd.meet.detach()), terms.detach())
    jac = torch.autograd.functional.jacobian(terms_of, fwd.meet.detach()).reshape(2 * B, -1)  # [m, B*D]
    gram = U.representation_gramian(terms, fwd.meet)
    torch.testing.assert_close(gram, jac @ jac.T, rtol=1e-10, atol=1e-12)
    assert (gram.diagonal()[B:][~fwd.valid_vt] == 0).all()  # clips without text: zero video-text rows
    # a row reaches other samples' representations through the negatives: not the per-sample own gradient
    assert (jac.reshape(2 * B, B, -1)[0, 1:].abs().sum(-1) > 0).all()


def test_mean_preference_update_is_the_plain_gradient_and_upgrad_update_conflicts_with_no_term() -> None:
    model, batch = tiny("ms")
    fwd = forward_losses(model, batch, TAU)
    c_va, c_vt = objective_cotangents(fwd.valid_vt, 1.0)
    terms, w = U.instance_upgrad_weights(fwd.l_va, fwd.l_vt, c_va, c_vt, lambda t: U.representation_gramian(t, fwd.meet), reg_eps=0.0)
    m = 2 * B
    (mean,) = torch.autograd.grad(terms, fwd.meet, torch.full((m,), 1 / m, dtype=terms.dtype), retain_graph=True)
    g_va, g_vt = per_sample_gradients(fwd.l_va, fwd.l_vt, fwd.meet, c_va, c_vt)
    torch.testing.assert_close(mean, g_va + g_vt)
    (update,) = torch.autograd.grad(terms, fwd.meet, w, retain_graph=True)
    rows = torch.stack(U.leaf_jacobians(terms, [fwd.meet])[0].unbind())  # [m, B, D]
    inner = (rows * update).flatten(1).sum(1)
    assert float(((rows * mean).flatten(1).sum(1)).min()) < 0  # the plain gradient hurts some term
    assert float(inner.min()) >= -1e-10 * float(inner.abs().max())


def separable_losses(fwd: ForwardOutput, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Per-sample-separable losses on the heads' outputs: sample ``i``'s loss reads sample ``i``'s representations only."""
    z = fwd.outputs
    l_va = ((z["z_va_video"] - z["z_va_audio"]) ** 2).sum(-1)
    per_caption = ((z["z_vat_video"][:, None] - z["z_vat_text"]) ** 2).sum(-1) * batch["text_mask"]
    l_vt = torch.where(fwd.valid_vt, per_caption.sum(-1), torch.zeros_like(l_va))
    return l_va, l_vt


def engine_gramian(model: VATT, batch: dict[str, Tensor], outputs_of: Callable[[ForwardOutput], tuple[Tensor, Any]]) -> Tensor:
    """torchjd's autogram Gramian, over the shared parameters, of the outputs built from a fresh recorded forward."""
    grams = U.ParameterGramian.shared(model)
    with grams.recording():
        fwd = forward_losses(model, batch, TAU, detach=grams.meeting_keys)
    assert not any(m._forward_hooks for m in model.modules())  # the Engine's hooks are gone after the forward
    outputs, cut = outputs_of(fwd)
    return U.parameter_gramian(outputs, grams, cut=cut)


def blocks(gram: Tensor) -> rules.Gram:
    """The per-sample 2x2 diagonal blocks of a ``[2B, 2B]`` Gramian of ``(va terms ; vt terms)``."""
    return rules.Gram(gram.diagonal()[:B], gram.diagonal(B)[:B], gram.diagonal()[B:])


@pytest.mark.parametrize("backbone", ["ms", "ma"])
@pytest.mark.parametrize("exact", [False, True])
def test_ghost_gram_equals_torchjd_gramian_blocks_for_separable_losses(backbone: str, exact: bool) -> None:
    """With a per-sample-separable loss the gradient of sample ``i``'s loss term over the shared parameters is
    its share ``J_i^T dl_i/drep_i`` and nothing else, so our GhostGram's per-sample entries (seeded by the
    batch-mixed or by the own gradients: the same here) are the 2x2 diagonal blocks (``(i,i)``, ``(i,B+i)``,
    ``(B+i,B+i)``) of torchjd's Gramian of the ``2B`` terms ``c_k l_k``. In ``ma`` both count the audio and
    text sequences' paths through the shared Transformer too."""
    model, batch = tiny(backbone)
    ghost = GhostGram(model)
    with ghost.recording(B):
        fwd = forward_losses(model, batch, TAU, detach=ghost.meeting_keys)
    c_va, c_vt = objective_cotangents(fwd.valid_vt, 1.0)
    ours = ghost.measure(*separable_losses(fwd, batch), fwd.cut, c_va, c_vt, last=True, exact=exact)[2]

    def terms(f: ForwardOutput) -> tuple[Tensor, dict[str, tuple[Tensor, Tensor]]]:
        l_va, l_vt = separable_losses(f, batch)
        return torch.cat([c_va * l_va, c_vt * l_vt]), f.cut

    theirs = blocks(engine_gramian(model, batch, terms))
    for key in ("aa", "ab", "bb"):
        torch.testing.assert_close(getattr(ours, key), getattr(theirs, key), rtol=1e-9, atol=1e-14, msg=key)
    assert (ours.ab[fwd.valid_vt] != 0).all() and (ours.bb[~fwd.valid_vt] == 0).all()


@pytest.mark.parametrize("backbone", ["ms", "ma"])
def test_ghost_gram_of_contrastive_seeds_equals_torchjd_gramian_of_the_seeded_outputs(backbone: str) -> None:
    """With the contrastive losses, GhostGram's per-sample gradient is ``J_i^T s_i`` for the seed ``s_i`` at sample
    ``i``'s representations (the batch-mixed gradient): the gradient of the per-sample output
    ``<rep_i, s_i>`` (``s`` held fixed). torchjd's Gramian of those ``2B`` outputs has our entries as its 2x2 blocks."""
    model, batch = tiny(backbone)
    ghost = GhostGram(model)
    with ghost.recording(B):
        fwd = forward_losses(model, batch, TAU, detach=ghost.meeting_keys)
    c_va, c_vt = objective_cotangents(fwd.valid_vt, 1.0)
    seeds = leaf_gradients(fwd.l_va, fwd.l_vt, {k: leaf for k, (_, leaf) in fwd.cut.items()}, c_va, c_vt)
    ours = ghost.measure(fwd.l_va, fwd.l_vt, fwd.cut, c_va, c_vt, last=True)[2]

    def seeded(f: ForwardOutput) -> tuple[Tensor, None]:
        out = []
        for objective in ("va", "vt"):
            per = [(f.cut[k][0] * s.detach()).reshape(B, -1).sum(1) for k, s in seeds[objective].items() if s is not None]
            idle = [f.cut[k][0].reshape(B, -1).sum(1) * 0 for k, s in seeds[objective].items() if s is None]
            out.append(torch.stack(per + idle).sum(0))
        return torch.cat(out), None

    theirs = blocks(engine_gramian(model, batch, seeded))
    for key in ("aa", "ab", "bb"):
        torch.testing.assert_close(getattr(ours, key), getattr(theirs, key), rtol=1e-9, atol=1e-14, msg=key)


@pytest.mark.parametrize("backbone", ["ms", "ma"])
def test_engine_gramian_equals_the_materialised_jacobian_gramian(backbone: str) -> None:
    """The instance terms of the contrastive losses through the cut: torchjd's Engine (plus the loose [AGG]
    token's direct block) against ``J J^T`` of the materialised ``[2B, P]`` Jacobian over the shared parameters."""
    model, batch = tiny(backbone)
    grams = U.ParameterGramian.shared(model)
    assert [p for p in grams.loose] == [model.backbone.agg["video"]]
    with grams.recording():
        fwd = forward_losses(model, batch, TAU, detach=grams.meeting_keys)
    c_va, c_vt = objective_cotangents(fwd.valid_vt, 1.0)
    terms = U.instance_terms(fwd.l_va, fwd.l_vt, c_va, c_vt)
    engine = U.parameter_gramian(terms, grams, cut=fwd.cut)
    direct = U.parameter_gramian(terms, list(model.shared_parameters().values()), cut=fwd.cut)
    torch.testing.assert_close(engine, direct, rtol=1e-10, atol=1e-12 * float(direct.abs().max()))
    assert (direct < 0).any()  # terms conflict over the parameters: UPGrad has work to do
    torch.testing.assert_close(U.upgrad_weights(engine), UPGradWeighting()(engine), rtol=1e-7, atol=1e-10)
