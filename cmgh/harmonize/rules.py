"""Gradient realignment rules: how the two objectives' per-sample gradients are combined.

Each rule is one small function ``rule(g_va [B,D], g_vt [B,D], **params) -> combined [B,D]``,
registered by name (the ``pretrain.harmonize.rule`` config key). Rows are samples: ``g_va[i]``
and ``g_vt[i]`` are the gradients of the video-audio and video-text objectives at sample ``i``'s
meeting point (the shared video representation, :mod:`cmgh.harmonize.gradients`). Every rule is
vectorised over the batch and row ``i`` of the output depends only on row ``i`` of the inputs
(``gradvac`` also reads a target shared across the batch, kept in an explicit ``state``).

Rules accept and ignore parameters they do not use (``**_``), so the trainer can pass the whole
``harmonize`` section to any of them. A row without text has ``g_vt[i] = 0``: no rule changes
it (there is nothing to conflict with), so it receives ``g_va[i]`` only.

* ``none``    plain sum: the gradient of ``L_va + lambda L_vt`` (VATT).
* ``cmgh``    CMGH's cross-modality gradient realignment (Wu et al. 2022, Sec. 3.2): when
              ``cos(g_va, g_vt) < 0`` remove the conflicting component by projecting onto the
              other gradient's normal plane; ``project`` picks which side(s) are projected.
* ``pcgrad``  PCGrad (Yu et al., NeurIPS 2020, Alg. 1), per sample.
* ``gradvac`` Gradient Vaccine (Wang et al., ICLR 2021, Sec. 3, Alg. 1) with an EMA target.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from cmgh.errors import ConfigError
from cmgh.registry import Registry

Rule = Callable[..., Tensor]
_EPS = 1e-12
_REGISTRY: Registry[Rule] = Registry("harmonization rule", "pretrain.harmonize.rule")
register, get, names = _REGISTRY.register, _REGISTRY.get, _REGISTRY.names


def conflict_cosine(g_va: Tensor, g_vt: Tensor) -> Tensor:
    """Per-row cosine ``[B]`` between the two gradients (CMGH's conflict measure, Sec. 3.2).

    Negative = the objectives pull the sample's representation in opposing directions. A row
    where either gradient is zero (e.g. no text) has cosine 0.
    """
    dot = (g_va * g_vt).sum(-1)
    norms = g_va.norm(dim=-1) * g_vt.norm(dim=-1)
    return torch.where(norms > _EPS, dot / norms.clamp_min(_EPS), torch.zeros_like(dot))


def _reject(g: Tensor, onto: Tensor, where: Tensor) -> Tensor:
    """``g`` minus its component along ``onto`` on rows ``where`` (projection onto the normal plane)."""
    coef = (g * onto).sum(-1, keepdim=True) / (onto * onto).sum(-1, keepdim=True).clamp_min(_EPS)
    return torch.where(where[:, None], g - coef * onto, g)


@register("none")
def none(g_va: Tensor, g_vt: Tensor, **_: Any) -> Tensor:
    """No harmonization: the sum, i.e. the plain gradient of the total objective."""
    return g_va + g_vt


@register("cmgh")
def cmgh(g_va: Tensor, g_vt: Tensor, *, project: str = "both", **_: Any) -> Tensor:
    """CMGH gradient realignment (Wu et al. 2022, Sec. 3.2), per triplet.

    On rows with ``cos(g_va, g_vt) < 0``:

    * ``both``: ``g_va <- g_va - (g_va.g_vt/|g_vt|^2) g_vt`` and ``g_vt <- g_vt - (g_vt.g_va/|g_va|^2) g_va``
      (both against the originals), then sum;
    * ``vt``: only the video-text gradient is projected (the text side is the noisier one in
      HowTo100M's ASR captions, so video-audio keeps its full gradient);
    * ``va``: only the video-audio gradient is projected.

    Other rows are summed unchanged.
    """
    if project not in ("both", "vt", "va"):
        raise ConfigError(f"pretrain.harmonize.project: {project!r} is not one of both, vt, va")
    conflict = (g_va * g_vt).sum(-1) < 0
    new_va = _reject(g_va, g_vt, conflict) if project in ("both", "va") else g_va
    new_vt = _reject(g_vt, g_va, conflict) if project in ("both", "vt") else g_vt
    return new_va + new_vt


def pcgrad_tasks(grads: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """PCGrad (Yu et al. 2020, Alg. 1) for ``T`` tasks per sample: ``[T,B,D] -> [B,D]``.

    For each task ``i``, ``g_i'`` starts at ``g_i`` and, for the other tasks ``j`` in a random
    order, is projected onto the normal plane of the *original* ``g_j`` when ``g_i'.g_j < 0``;
    the result is ``sum_i g_i'``. The order is drawn once per call (shared by the batch).
    """
    t = grads.shape[0]
    out = torch.zeros_like(grads[0])
    for i in range(t):
        gi = grads[i]
        others = [j for j in range(t) if j != i]
        order = torch.randperm(len(others), generator=generator).tolist() if len(others) > 1 else [0]
        for k in order:
            gj = grads[others[k]]
            gi = _reject(gi, gj, (gi * gj).sum(-1) < 0)
        out = out + gi
    return out


@register("pcgrad")
def pcgrad(g_va: Tensor, g_vt: Tensor, *, generator: torch.Generator | None = None, **_: Any) -> Tensor:
    """PCGrad per sample for the two objectives.

    With two tasks each gradient has a single "other" gradient, so the random order of Alg. 1
    has no effect and the result coincides with ``cmgh`` with ``project="both"``; it is kept
    as the reference name (computed by the general :func:`pcgrad_tasks`), and the tests check
    the coincidence. The combined gradient has a non-negative inner product with both
    originals: ``<g, g_va> = |g_va|^2 (1 - cos^2) >= 0`` on conflicting rows.
    """
    return pcgrad_tasks(torch.stack([g_va, g_vt]), generator)


@register("gradvac")
def gradvac(
    g_va: Tensor,
    g_vt: Tensor,
    *,
    state: dict[str, Any] | None = None,
    gradvac_beta: float = 0.01,
    target: float = 0.0,
    **_: Any,
) -> Tensor:
    """Gradient Vaccine (Wang et al., ICLR 2021, Sec. 3: the closed-form update and Alg. 1), per sample.

    ``phi_i = cos(g_va[i], g_vt[i])``; on rows with ``phi_i < phi_hat`` the video-text gradient
    is moved so that its cosine with ``g_va[i]`` becomes exactly ``phi_hat``:

        g_vt' = g_vt + |g_vt| (phi_hat sqrt(1-phi^2) - phi sqrt(1-phi_hat^2)) / (|g_va| sqrt(1-phi_hat^2)) g_va

    and the result is ``g_va + g_vt'``. ``phi_hat`` is GradVac's EMA of the observed
    similarity, ``phi_hat <- (1-beta) phi_hat + beta * mean_i phi_i`` over rows with both
    gradients non-zero. It is the one piece of state of any rule and it is shared by the batch
    (a sample's target depends on earlier batches, not on its batch-mates' current values; the
    update happens after the adjustment). Pass a mutable ``state`` dict (key ``phi_hat``,
    initialised to ``target``, 0 by default as in GradVac) to track it across steps; without it
    the rule is stateless with target ``target``. With ``phi_hat = 0`` the adjustment equals
    PCGrad's projection of ``g_vt``.
    """
    phi = conflict_cosine(g_va, g_vt)
    phi_hat = float(state.get("phi_hat", target)) if state is not None else float(target)
    phi_hat = min(max(phi_hat, -0.999), 0.999)
    nva, nvt = g_va.norm(dim=-1), g_vt.norm(dim=-1)
    active = (nva > _EPS) & (nvt > _EPS)
    adjust = active & (phi < phi_hat)
    s_hat = (1.0 - phi_hat**2) ** 0.5
    coef = nvt * (phi_hat * (1.0 - phi**2).clamp_min(0).sqrt() - phi * s_hat) / (nva.clamp_min(_EPS) * s_hat)
    new_vt = torch.where(adjust[:, None], g_vt + coef[:, None] * g_va, g_vt)
    if state is not None and bool(active.any()):
        observed = float(phi[active].mean())
        state["phi_hat"] = (1.0 - gradvac_beta) * phi_hat + gradvac_beta * observed
    return g_va + new_vt
