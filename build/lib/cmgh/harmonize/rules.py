"""Gradient realignment rules: how the two objectives' per-sample gradients are combined.

Every rule here has the same form: sample ``i``'s combined gradient is ``alpha_i g_va[i] +
beta_i g_vt[i]``, with scalars that depend only on the sample's 2x2 Gram matrix of the two
gradients (``<g_va,g_va>``, ``<g_va,g_vt>``, ``<g_vt,g_vt>``, a :class:`Gram`). A rule is
therefore registered as its *coefficients* ``rule(gram, **params) -> (alpha [B], beta [B])``,
which is what lets the same rule run wherever the Gram is known:

* at the representation, where the gradients are ``[B,D]`` vectors (:meth:`Rule.__call__`
  builds the Gram and returns the combination);
* over every shared parameter (meeting point ``all_parameters``), where the Gram comes from
  activations and cotangents without any ``[B,P]`` gradient (:mod:`cmgh.harmonize.ghost`) and
  the combination is one weight-gradient pass with cotangents scaled by ``alpha``, ``beta``.

Rows are samples; row ``i``'s coefficients depend only on row ``i``'s Gram (``gradvac`` also
reads a target shared across the batch, kept in an explicit ``state``). Rules accept and ignore
parameters they do not use (``**_``), so the trainer can pass the whole ``harmonize`` section to
any of them. A row without text has ``g_vt[i] = 0``: no rule changes it (nothing to conflict
with), so it receives ``g_va[i]`` only.

* ``none``    plain sum: the gradient of ``L_va + lambda L_vt`` (VATT).
* ``cmgh``    our reconstruction of CMGH's cross-modality gradient realignment (Wu et al. 2022,
              from the abstract: the method section was never available): when
              ``cos(g_va, g_vt) < 0`` remove the conflicting component by projecting onto the
              other gradient's normal plane; ``project`` picks which side(s) are projected.
* ``pcgrad``  PCGrad (Yu et al., NeurIPS 2020, Alg. 1), per sample.
* ``gradvac`` Gradient Vaccine (Wang et al., ICLR 2021, Sec. 3, Alg. 1) with an EMA target.
* ``norm_matched``, ``random_partner``: mechanism controls for ``cmgh`` (:mod:`cmgh.harmonize.controls`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from cmgh.errors import ConfigError
from cmgh.registry import Registry

_EPS = 1e-12


@dataclass(frozen=True)
class Gram:
    """Per-sample 2x2 Gram matrices of the two objectives' gradients: ``aa = <g_va,g_va>``,
    ``ab = <g_va,g_vt>``, ``bb = <g_vt,g_vt>``, each ``[B]``."""

    aa: Tensor
    ab: Tensor
    bb: Tensor

    @classmethod
    def of(cls, g_va: Tensor, g_vt: Tensor) -> Gram:
        """The Gram of ``[B,D]`` gradient rows."""
        return cls((g_va * g_va).sum(-1), (g_va * g_vt).sum(-1), (g_vt * g_vt).sum(-1))

    def cosine(self) -> Tensor:
        """CMGH's conflict measure per row (reconstruction); 0 where either gradient is zero (e.g. no text)."""
        norms = (self.aa.clamp_min(0) * self.bb.clamp_min(0)).sqrt()
        return torch.where(norms > _EPS, self.ab / norms.clamp_min(_EPS), torch.zeros_like(self.ab))

    def __add__(self, other: Gram) -> Gram:
        return Gram(self.aa + other.aa, self.ab + other.ab, self.bb + other.bb)


Coefficients = Callable[..., tuple[Tensor, Tensor]]


class Rule:
    """A registered rule: its coefficients, and the combination of ``[B,D]`` gradient rows."""

    needs_vectors = False  # True: the rule reads other rows' gradients, not only each row's Gram

    def __init__(self, name: str, coefficients: Coefficients) -> None:
        self.name, self.coefficients = name, coefficients
        self.__doc__ = coefficients.__doc__

    def __call__(self, g_va: Tensor, g_vt: Tensor, **params: Any) -> Tensor:
        """``alpha_i g_va[i] + beta_i g_vt[i]`` for every row."""
        return self.combine(g_va, g_vt, Gram.of(g_va, g_vt), **params)

    def combine(self, g_va: Tensor, g_vt: Tensor, gram: Gram, **params: Any) -> Tensor:
        """The combined ``[B,D]`` gradient, given the rows' Gram (already computed by the caller)."""
        return combination(*self.coefficients(gram, **params), g_va, g_vt)


VectorCombination = Callable[..., Tensor]


class VectorRule(Rule):
    """A rule that needs the gradient vectors themselves (e.g. another row's gradient): it runs
    where the gradients are ``[B,D]`` rows (representation and parameters meeting points) and
    has no Gram coefficients, so ``all_parameters`` refuses it."""

    needs_vectors = True

    def __init__(self, name: str, vectors: VectorCombination) -> None:
        super().__init__(name, self._no_coefficients)
        self.vectors = vectors
        self.__doc__ = vectors.__doc__

    def _no_coefficients(self, gram: Gram, **_: Any) -> tuple[Tensor, Tensor]:
        raise ConfigError(f"pretrain.harmonize.rule: {self.name!r} needs the gradient vectors and cannot run at meeting_point all_parameters")

    def combine(self, g_va: Tensor, g_vt: Tensor, gram: Gram, **params: Any) -> Tensor:
        return self.vectors(g_va, g_vt, gram, **params)


def combination(alpha: Tensor, beta: Tensor, g_va: Tensor, g_vt: Tensor) -> Tensor:
    """Each row's ``alpha_i g_va[i] + beta_i g_vt[i]``: a rule's coefficients applied to ``[B,D]`` gradients."""
    return alpha[:, None].to(g_va.dtype) * g_va + beta[:, None].to(g_vt.dtype) * g_vt


_REGISTRY: Registry[Rule] = Registry("harmonization rule", "pretrain.harmonize.rule")
get, names, described = _REGISTRY.get, _REGISTRY.names, _REGISTRY.described


def register(name: str) -> Callable[[Coefficients], Rule]:
    """Register ``coefficients(gram, **params) -> (alpha, beta)`` under ``name`` (the ``pretrain.harmonize.rule`` value)."""

    def wrap(coefficients: Coefficients) -> Rule:
        return _REGISTRY.register(name)(Rule(name, coefficients))

    return wrap


def register_vectors(name: str) -> Callable[[VectorCombination], Rule]:
    """Register ``vectors(g_va, g_vt, gram, **params) -> combined [B,D]`` under ``name`` (a :class:`VectorRule`)."""

    def wrap(vectors: VectorCombination) -> Rule:
        return _REGISTRY.register(name)(VectorRule(name, vectors))

    return wrap


def conflict_cosine(g_va: Tensor, g_vt: Tensor) -> Tensor:
    """Per-row cosine ``[B]`` between two ``[B,D]`` gradients (a row with a zero gradient has cosine 0)."""
    return Gram.of(g_va, g_vt).cosine()


def _ones(gram: Gram) -> Tensor:
    return torch.ones_like(gram.ab)


def _projection(dot: Tensor, onto_sq: Tensor, where: Tensor) -> Tensor:
    """The coefficient ``-dot/|onto|^2`` of removing a gradient's component along ``onto`` on rows ``where``."""
    return torch.where(where, -dot / onto_sq.clamp_min(_EPS), torch.zeros_like(dot))


@register("none")
def none(gram: Gram, **_: Any) -> tuple[Tensor, Tensor]:
    """No harmonization: the sum, i.e. the plain gradient of the total objective."""
    return _ones(gram), _ones(gram)


@register("cmgh")
def cmgh(gram: Gram, *, project: str = "both", **_: Any) -> tuple[Tensor, Tensor]:
    """CMGH gradient realignment per triplet (our reconstruction from the abstract of Wu et al. 2022).

    On rows with ``cos(g_va, g_vt) < 0``:

    * ``both``: ``g_va <- g_va - (g_va.g_vt/|g_vt|^2) g_vt`` and ``g_vt <- g_vt - (g_vt.g_va/|g_va|^2) g_va``
      (both against the originals), then sum: ``alpha = 1 - ab/aa``, ``beta = 1 - ab/bb``;
    * ``vt``: only the video-text gradient is projected (the text side is the noisier one in
      HowTo100M's ASR captions, so video-audio keeps its full gradient);
    * ``va``: only the video-audio gradient is projected.

    Other rows are summed unchanged.
    """
    if project not in ("both", "vt", "va"):
        raise ConfigError(f"pretrain.harmonize.project: {project!r} is not one of both, vt, va")
    conflict = gram.ab < 0
    alpha, beta = _ones(gram), _ones(gram)
    if project in ("both", "vt"):  # g_vt projected: it loses (ab/aa) g_va
        alpha = alpha + _projection(gram.ab, gram.aa, conflict)
    if project in ("both", "va"):  # g_va projected: it loses (ab/bb) g_vt
        beta = beta + _projection(gram.ab, gram.bb, conflict)
    return alpha, beta


def _reject(g: Tensor, onto: Tensor, where: Tensor) -> Tensor:
    """``g`` minus its component along ``onto`` on rows ``where`` (projection onto the normal plane)."""
    coef = (g * onto).sum(-1, keepdim=True) / (onto * onto).sum(-1, keepdim=True).clamp_min(_EPS)
    return torch.where(where[:, None], g - coef * onto, g)


def pcgrad_tasks(grads: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """PCGrad (Yu et al. 2020, Alg. 1) for ``T`` tasks per sample on gradient vectors: ``[T,B,D] -> [B,D]``.

    For each task ``i``, ``g_i'`` starts at ``g_i`` and, for the other tasks ``j`` in a random
    order, is projected onto the normal plane of the *original* ``g_j`` when ``g_i'.g_j < 0``;
    the result is ``sum_i g_i'``. The order is drawn once per call (shared by the batch). The
    reference the two-objective coefficients of ``pcgrad`` are tested against.
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
def pcgrad(gram: Gram, **_: Any) -> tuple[Tensor, Tensor]:
    """PCGrad per sample for the two objectives.

    With two tasks each gradient has a single "other" gradient, so the random order of Alg. 1
    has no effect and the result coincides with ``cmgh`` with ``project="both"``; it is kept as
    the reference name, and the tests check it against the general :func:`pcgrad_tasks`. The
    combined gradient has a non-negative inner product with both originals:
    ``<g, g_va> = |g_va|^2 (1 - cos^2) >= 0`` on conflicting rows.
    """
    return cmgh.coefficients(gram, project="both")


@register("gradvac")
def gradvac(
    gram: Gram,
    *,
    state: dict[str, Any] | None = None,
    gradvac_beta: float = 0.01,
    target: float = 0.0,
    **_: Any,
) -> tuple[Tensor, Tensor]:
    """Gradient Vaccine (Wang et al., ICLR 2021, Sec. 3: the closed-form update and Alg. 1), per sample.

    ``phi_i = cos(g_va[i], g_vt[i])``; on rows with ``phi_i < phi_hat`` the video-text gradient
    is moved so that its cosine with ``g_va[i]`` becomes exactly ``phi_hat``:

        g_vt' = g_vt + |g_vt| (phi_hat sqrt(1-phi^2) - phi sqrt(1-phi_hat^2)) / (|g_va| sqrt(1-phi_hat^2)) g_va

    and the result is ``g_va + g_vt'`` (``alpha = 1 + `` that coefficient, ``beta = 1``).
    ``phi_hat`` is GradVac's EMA of the observed similarity, ``phi_hat <- (1-beta) phi_hat +
    beta * mean_i phi_i`` over rows with both gradients non-zero. It is the one piece of state
    of any rule and it is shared by the batch (a sample's target depends on earlier batches, not
    on its batch-mates' current values; the update happens after the adjustment). Pass a
    mutable ``state`` dict (key ``phi_hat``, initialised to ``target``, 0 by default as in
    GradVac) to track it across steps; without it the rule is stateless with target ``target``.
    With ``phi_hat = 0`` the adjustment equals PCGrad's projection of ``g_vt``.
    """
    phi = gram.cosine()
    phi_hat = float(state.get("phi_hat", target)) if state is not None else float(target)
    phi_hat = min(max(phi_hat, -0.999), 0.999)
    nva, nvt = gram.aa.clamp_min(0).sqrt(), gram.bb.clamp_min(0).sqrt()
    active = (nva > _EPS) & (nvt > _EPS)
    adjust = active & (phi < phi_hat)
    s_hat = (1.0 - phi_hat**2) ** 0.5
    coef = nvt * (phi_hat * (1.0 - phi**2).clamp_min(0).sqrt() - phi * s_hat) / (nva.clamp_min(_EPS) * s_hat)
    alpha = torch.where(adjust, 1.0 + coef, _ones(gram))
    if state is not None and bool(active.any()):
        observed = float(phi[active].mean())
        state["phi_hat"] = (1.0 - gradvac_beta) * phi_hat + gradvac_beta * observed
    return alpha, _ones(gram)
