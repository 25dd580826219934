"""CAGrad (Liu et al., NeurIPS 2021, "Conflict-Averse Gradient Descent for Multi-task Learning"), a Gram rule.

With two objectives CAGrad's update is a combination of the two gradients, so it is registered
like every other rule (``pretrain.harmonize.rule: cagrad``) as coefficients of a 2x2 Gram: per
sample (``harmonize.granularity: sample``) or, as the paper applies it, on the whole batch's
two gradients over the shared parameters (``granularity: batch``).

CAGrad (Alg. 1): with ``g0 = (g_va + g_vt) / 2`` and ``phi = c^2 |g0|^2``, find the weight
``w`` in the simplex minimising ``F(w) = g_w . g0 + sqrt(phi) |g_w|`` with ``g_w = w g_va +
(1 - w) g_vt``; the update is ``d = g0 + (sqrt(phi) / |g_w|) g_w``. ``F`` is convex in ``w``
(linear plus a norm of an affine map), so a golden-section search over ``[0, 1]`` solves it to
float precision on every row at once. The official implementation divides ``d`` by ``1 + c^2``
(``rescale``, on by default as there). Ours multiplies by 2 (the number of objectives), so that
``c = 0`` gives exactly the plain sum ``g_va + g_vt``, the scale every other rule keeps under
gradient clipping.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from cmgh.errors import ConfigError
from cmgh.harmonize import rules
from cmgh.harmonize.rules import Gram

_EPS = 1e-12
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_ITERATIONS = 60  # the bracket shrinks by 0.618 per iteration: 60 leave it below 1e-12


def _norm_sq(gram: Gram, w: Tensor) -> Tensor:
    """``|w g_va + (1 - w) g_vt|^2`` per row."""
    return w * w * gram.aa + 2 * w * (1 - w) * gram.ab + (1 - w) * (1 - w) * gram.bb


def _objective(gram: Gram, w: Tensor, sqrt_phi: Tensor) -> Tensor:
    """CAGrad's dual objective ``F(w) = g_w . g0 + sqrt(phi) |g_w|`` per row."""
    dot = 0.5 * (w * (gram.aa + gram.ab) + (1 - w) * (gram.ab + gram.bb))
    return dot + sqrt_phi * _norm_sq(gram, w).clamp_min(0).sqrt()


def simplex_weight(gram: Gram, c: float) -> Tensor:
    """The minimiser ``w`` of CAGrad's dual objective on ``[0, 1]`` per row (golden-section search; ``F`` is convex)."""
    g0_sq = 0.25 * (gram.aa + 2 * gram.ab + gram.bb)
    sqrt_phi = c * g0_sq.clamp_min(0).sqrt()
    lo, hi = torch.zeros_like(gram.ab), torch.ones_like(gram.ab)
    for _ in range(_ITERATIONS):
        x1, x2 = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
        left = _objective(gram, x1, sqrt_phi) <= _objective(gram, x2, sqrt_phi)
        hi, lo = torch.where(left, x2, hi), torch.where(left, lo, x1)
    return 0.5 * (lo + hi)


@rules.register("cagrad")
def cagrad(gram: Gram, *, cagrad_c: float = 0.5, cagrad_rescale: bool = True, **_: Any) -> tuple[Tensor, Tensor]:
    """CAGrad (Liu et al. 2021): the update within c|g0| of the mean gradient that most improves the worse objective.

    Returns ``2 (0.5 + lam w, 0.5 + lam (1 - w)) / (1 + c^2 if rescale else 1)`` with
    ``lam = c |g0| / |g_w|`` (0 where ``g_w = 0``). A row with one gradient zero (no text, or no
    audio) has nothing to balance and keeps the plain sum (coefficients 1), as under every rule.
    """
    if cagrad_c < 0:
        raise ConfigError(f"pretrain.harmonize.cagrad.c: {cagrad_c} is below 0")
    w = simplex_weight(gram, cagrad_c)
    g0_norm = (0.25 * (gram.aa + 2 * gram.ab + gram.bb)).clamp_min(0).sqrt()
    gw_norm = _norm_sq(gram, w).clamp_min(0).sqrt()
    lam = torch.where(gw_norm > _EPS, cagrad_c * g0_norm / gw_norm.clamp_min(_EPS), torch.zeros_like(gw_norm))
    scale = 2.0 / (1.0 + cagrad_c**2) if cagrad_rescale else 2.0
    single = (gram.aa <= _EPS) | (gram.bb <= _EPS)
    ones = torch.ones_like(w)
    return torch.where(single, ones, scale * (0.5 + lam * w)), torch.where(single, ones, scale * (0.5 + lam * (1 - w)))
