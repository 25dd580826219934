"""Mechanism controls for gradient realignment: what ``cmgh`` changes besides the direction of conflicting gradients.

A gain of the ``cmgh`` rule could come from harmonizing directions, or merely from a smaller
step on conflicting rows, or from perturbing about half of the rows in any way. Two rules,
registered next to ``cmgh`` (``pretrain.harmonize.rule``), tell these apart:

* ``norm_matched``: each row gets the plain sum ``g_va + g_vt`` rescaled to the norm of what
  ``cmgh`` would give it: ``cmgh``'s step size with the baseline's direction. A Gram rule: it
  runs at every meeting point.
* ``random_partner``: on exactly the rows ``cmgh`` projects (``cos < 0``), each gradient is
  projected onto the normal plane of a *random other sample's* gradient of the other objective
  instead of its own triplet's: the same fraction of rows perturbed by the same kind of
  operation, with no information about the triplet's conflict. It reads other rows' gradient
  vectors, so it runs at the ``representation`` and ``parameters`` meeting points only.

Both honour ``pretrain.harmonize.project`` as ``cmgh`` does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cmgh.harmonize import rules
from cmgh.harmonize.rules import Gram

_EPS = 1e-12
PARTNER_SEED = 7_919  # offset of the partner draws' generator (seeded by the step: reproducible on resume)


@rules.register("norm_matched")
def norm_matched(gram: Gram, *, project: str = "both", **_: Any) -> tuple[Tensor, Tensor]:
    """Control: the plain sum g_va + g_vt rescaled per row to the cmgh rule's norm (same step size, no direction change).

    With ``cmgh``'s coefficients ``(a, b)``, the realigned norm is ``|a g_va + b g_vt|^2 = a^2 aa +
    2ab ab + b^2 bb`` and the plain one ``aa + 2 ab + bb``; both coefficients are their ratio's
    square root (1 where the plain sum is zero).
    """
    a, b = rules.cmgh.coefficients(gram, project=project)
    realigned = (a * a * gram.aa + 2 * a * b * gram.ab + b * b * gram.bb).clamp_min(0)
    plain = (gram.aa + 2 * gram.ab + gram.bb).clamp_min(0)
    scale = torch.where(plain > _EPS, (realigned / plain.clamp_min(_EPS)).sqrt(), torch.ones_like(plain))
    return scale, scale.clone()


def random_partners(candidates: Tensor, rows: Tensor, generator: torch.Generator) -> Tensor:
    """For each of ``rows`` (indices, each one of ``candidates``), a uniformly drawn other index of ``candidates``."""
    n = candidates.numel()
    position = torch.searchsorted(candidates, rows)
    draw = torch.randint(0, n - 1, (rows.numel(),), generator=generator)
    return candidates[draw + (draw >= position).long()]


@rules.register_vectors("random_partner")
def random_partner(g_va: Tensor, g_vt: Tensor, gram: Gram, *, project: str = "both", step: int = 0, **_: Any) -> Tensor:
    """Control: the rows cmgh would project are projected onto a random other sample's gradient instead.

    Rows with ``cos(g_va, g_vt) >= 0`` get the plain sum. A conflicting row ``i`` draws a partner
    ``j != i`` among the rows with both gradients non-zero (a generator seeded by the step) and,
    as ``project`` says, ``g_va[i]`` loses its component along ``g_vt[j]`` and/or ``g_vt[i]`` its
    component along ``g_va[j]``, whatever the sign of those inner products.
    """
    rules.cmgh.coefficients(gram, project=project)  # validates ``project``
    candidates = ((gram.aa > _EPS) & (gram.bb > _EPS)).cpu().nonzero().flatten()
    rows = (gram.ab < 0).cpu().nonzero().flatten()  # cmgh's rows: a negative inner product needs both non-zero
    out = g_va + g_vt
    if rows.numel() == 0 or candidates.numel() < 2:
        return out
    partners = random_partners(candidates, rows, torch.Generator().manual_seed(PARTNER_SEED + int(step)))
    rows, partners = rows.to(g_va.device), partners.to(g_va.device)
    va, vt = g_va[rows], g_vt[rows]
    if project in ("both", "va"):  # g_va[i] projected onto the normal plane of g_vt[j]
        va = _reject(va, g_vt[partners])
    if project in ("both", "vt"):  # g_vt[i] projected onto the normal plane of g_va[j]
        vt = _reject(vt, g_va[partners])
    return out.index_copy(0, rows, va + vt)


def _reject(g: Tensor, onto: Tensor) -> Tensor:
    """Each row of ``g`` minus its component along the same row of ``onto``."""
    coef = (g * onto).sum(-1, keepdim=True) / (onto * onto).sum(-1, keepdim=True).clamp_min(_EPS)
    return g - coef * onto
