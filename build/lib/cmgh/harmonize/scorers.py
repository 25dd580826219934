"""Curriculum scorers: each triplet's noisiness (higher = noisier), registered by name (``pretrain.curriculum.scorer``).

* ``conflict``: ``-cos(g_va, g_vt)`` at the meeting point, our reading of CMGH's criterion;
* ``loss``: the small-loss criterion (Han et al. 2018, Co-teaching): the per-sample loss of the
  droppable terms (``l_va + lambda l_vt`` for ``triplet`` granularity, ``l_vt`` for ``loss``);
* ``mixture``: NCR's criterion (Huang et al. NeurIPS 2021, "Learning with Noisy Correspondence"):
  the posterior of the high-loss component of a two-component 1-D Gaussian mixture fitted by EM to
  the losses of a :class:`LossWindow` (the last ``window_steps`` global batches), per objective
  under ``loss`` granularity, so that a flagged triplet loses exactly the term(s) whose loss looks
  noisy; a posterior is a calibrated probability, so ``threshold: 0.5`` keeps the clean component;
* ``oracle``: the generator's ground truth (:mod:`cmgh.harmonize.truth`), a positive control:
  what a perfect detector would let the curriculum do;
* ``quality``: the ground truth plus Gaussian noise whose scale makes the score's AUROC for the
  flags equal ``quality_auroc``: a detector of known quality, to draw benefit against detection
  quality.

A scorer returns a :class:`Score`: the noisiness, and under ``loss`` granularity which terms a
dropped triplet loses (by default its video-text term only; the oracle names the misaligned
pair's term: NCE for misaligned audio, MIL-NCE for misaligned text; the mixture the term(s)
whose posterior is above 1/2). Scorers are pure functions of their :class:`ScoreInputs`: the one
piece of state, the loss window, is the :class:`~cmgh.harmonize.curriculum.Curriculum`'s and
handed in."""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import torch
from torch import Tensor

from cmgh.errors import ConfigError
from cmgh.harmonize.truth import GroundTruth, missing_truth
from cmgh.registry import Registry


WINDOW_DEVICE, WINDOW_DTYPE = torch.device("cpu"), torch.float64  # where the window and its EM live (see LossWindow)
INIT_QUANTILES = (0.1, 0.9)  # the two components start at the window's low and high quantiles


@dataclass(frozen=True)
class Mixture:
    """Two 1-D Gaussians fitted to losses; index 0 is the low-mean (clean) component, 1 the high-mean (noisy) one."""

    weight: Tensor  # [2] mixing weights (sum 1)
    mean: Tensor  # [2], mean[0] <= mean[1]
    var: Tensor  # [2] variances (floored, never 0)

    @classmethod
    def single(cls, mean: float = 0.0, var: float = 1.0) -> Mixture:
        """One clean component (no noisy one): what a window without spread supports; every posterior is 0."""
        return cls(torch.tensor([1.0, 0.0], dtype=WINDOW_DTYPE), torch.tensor([mean, mean], dtype=WINDOW_DTYPE), torch.tensor([var, var], dtype=WINDOW_DTYPE))

    @property
    def noise_rate(self) -> float:
        """The mixing weight of the high-loss component: the estimated share of noisy samples."""
        return float(self.weight[1])

    def log_joint(self, x: Tensor) -> Tensor:
        """``[n, 2]``: ``log pi_k + log N(x; mu_k, var_k)`` (``x`` in the window's dtype)."""
        x = x.reshape(-1, 1)
        return self.weight.log() - 0.5 * (torch.log(2 * math.pi * self.var) + (x - self.mean) ** 2 / self.var)

    def posterior_high(self, x: Tensor) -> Tensor:
        """``P(noisy component | x)`` per element of ``x`` (any shape and device; float32 on ``x``'s device)."""
        joint = self.log_joint(x.detach().to(WINDOW_DEVICE, WINDOW_DTYPE).flatten())
        return torch.softmax(joint, dim=1)[:, 1].reshape(x.shape).to(x.device, torch.float32)


def fit_mixture(x: Tensor, iterations: int) -> Mixture:
    """Two-component 1-D Gaussian mixture fitted by ``iterations`` EM steps (deterministic: float64 on the CPU).

    Initialised from the low and high quantiles (:data:`INIT_QUANTILES`, falling back to the min and
    max), equal weights and the window's variance, as NCR fits its GMM to the losses. Variances are
    floored at ``1e-4`` of the window's (a component collapsing onto one repeated value would give a
    zero variance and infinite densities); a component that loses all its mass keeps its last
    parameters. Non-finite values are ignored; fewer than two distinct values give
    :meth:`Mixture.single` (no evidence of a second component).
    """
    x = x.detach().to(WINDOW_DEVICE, WINDOW_DTYPE).flatten()
    x = x[torch.isfinite(x)]
    if x.numel() == 0:
        return Mixture.single()
    center, spread = float(x.mean()), float(x.var(unbiased=False))
    if x.numel() < 2 or spread <= 1e-12 * (1.0 + center * center):
        return Mixture.single(center, max(spread, 1e-12))
    floor = 1e-4 * spread
    mean = torch.quantile(x, torch.tensor(INIT_QUANTILES, dtype=WINDOW_DTYPE))
    if mean[1] <= mean[0]:  # most values equal: start from the extremes
        mean = torch.stack([x.min(), x.max()])
    mix = Mixture(torch.full((2,), 0.5, dtype=WINDOW_DTYPE), mean, torch.full((2,), spread, dtype=WINDOW_DTYPE))
    n, column = x.numel(), x.reshape(-1, 1)
    for _ in range(iterations):
        resp = torch.softmax(mix.log_joint(x), dim=1)  # E step: [n, 2] responsibilities
        mass = resp.sum(0)
        live = mass > 1e-9 * n
        safe = mass.clamp_min(1e-300)
        mean = torch.where(live, (resp * column).sum(0) / safe, mix.mean)
        var = torch.where(live, ((resp * (column - mean) ** 2).sum(0) / safe).clamp_min(floor), mix.var)
        mix = Mixture(mass / n, mean, var)
    if mix.mean[0] > mix.mean[1]:  # EM may swap the roles: index 1 is the high-loss component
        mix = Mixture(mix.weight.flip(0), mix.mean.flip(0), mix.var.flip(0))
    return mix


@dataclass(frozen=True)
class LossWindow:
    """The per-sample losses ``(l_va, l_vt)`` of the eligible rows of the last ``steps`` global batches, oldest first.

    Immutable (:meth:`pushed` returns the next window), so a scorer reading it stays a pure function
    of its inputs; the :class:`~cmgh.harmonize.curriculum.Curriculum` holds the current one and
    checkpoints it. Kept in float64 on the CPU: a few thousand numbers, and the EM then gives the
    same mixture on every rank and device. Fits are memoised per window (it never changes).
    """

    steps: int
    entries: tuple[tuple[Tensor, Tensor], ...] = ()
    _fits: dict[tuple[str, int, float], Mixture] = field(default_factory=dict, compare=False, repr=False)

    def pushed(self, l_va: Tensor, l_vt: Tensor) -> LossWindow:
        """The window with one batch appended (its oldest dropped past ``steps``); rows where either loss is
        not finite (NaN marks a row that is not eligible) are left out."""
        va = l_va.detach().to(WINDOW_DEVICE, WINDOW_DTYPE).flatten()
        vt = l_vt.detach().to(WINDOW_DEVICE, WINDOW_DTYPE).flatten()
        rows = torch.isfinite(va) & torch.isfinite(vt)
        return LossWindow(self.steps, (*self.entries, (va[rows], vt[rows]))[-self.steps :])

    def losses(self, objective: str, vt_weight: float = 1.0) -> Tensor:
        """The window's losses of ``objective``: ``va``, ``vt`` or ``total`` (``l_va + vt_weight * l_vt``)."""
        if not self.entries:
            return torch.zeros(0, dtype=WINDOW_DTYPE)
        va = torch.cat([e[0] for e in self.entries])
        vt = torch.cat([e[1] for e in self.entries])
        return {"va": va, "vt": vt, "total": va + vt_weight * vt}[objective]

    def mixture(self, objective: str, iterations: int, vt_weight: float = 1.0) -> Mixture:
        """:func:`fit_mixture` on :meth:`losses` (memoised)."""
        key = (objective, int(iterations), float(vt_weight) if objective == "total" else 1.0)
        if key not in self._fits:
            self._fits[key] = fit_mixture(self.losses(objective, vt_weight), iterations)
        return self._fits[key]

    def state_dict(self) -> dict[str, Any]:
        return {"l_va": [e[0].clone() for e in self.entries], "l_vt": [e[1].clone() for e in self.entries]}

    @classmethod
    def from_state(cls, steps: int, state: Mapping[str, Any]) -> LossWindow:
        """The window a checkpoint saved (its last ``steps`` batches, should the window have shrunk)."""
        entries = tuple(
            (torch.as_tensor(va).to(WINDOW_DEVICE, WINDOW_DTYPE), torch.as_tensor(vt).to(WINDOW_DEVICE, WINDOW_DTYPE))
            for va, vt in zip(state.get("l_va", []), state.get("l_vt", []), strict=True)
        )
        return cls(steps, entries[-steps:])


@dataclass(frozen=True)
class ScoreInputs:
    """What a scorer may read at one step (all detached or detached by the scorer)."""

    step: int
    granularity: str  # "triplet" or "loss"
    vt_weight: float = 1.0
    cosine: Tensor | None = None  # [B] conflict cosine at the meeting point
    l_va: Tensor | None = None  # [B] per-sample NCE loss
    l_vt: Tensor | None = None  # [B] per-sample MIL-NCE loss
    truth: GroundTruth | None = None  # the generator's flags, when the corpus has them
    quality_auroc: float = 0.8
    quality_seed: int = 0
    window: LossWindow | None = None  # the recent losses (scorers with needs_window), this batch's included
    em_iterations: int = 10  # EM steps of the mixture fit


@dataclass(frozen=True)
class Score:
    """A scorer's verdict: ``noisiness [B]``; ``terms = (loses_va, loses_vt) [B] bool`` under ``loss``
    granularity (``None``: a dropped triplet loses its video-text term only)."""

    noisiness: Tensor
    terms: tuple[Tensor, Tensor] | None = None


class Scorer:
    """A registered scorer and what it needs computed first (the cosine, the ground truth) or kept (the loss window)."""

    def __init__(self, name: str, score: Callable[[ScoreInputs], Score], *, needs_cosine: bool, needs_truth: bool, needs_window: bool = False) -> None:
        self.name, self.score = name, score
        self.needs_cosine, self.needs_truth, self.needs_window = needs_cosine, needs_truth, needs_window
        self.__doc__ = score.__doc__

    def __call__(self, inputs: ScoreInputs) -> Score:
        if self.needs_truth and inputs.truth is None:
            raise missing_truth(self.name)
        return self.score(inputs)


_REGISTRY: Registry[Scorer] = Registry("curriculum scorer", "pretrain.curriculum.scorer")
get, names, described = _REGISTRY.get, _REGISTRY.names, _REGISTRY.described


def register(
    name: str, *, needs_cosine: bool = False, needs_truth: bool = False, needs_window: bool = False
) -> Callable[[Callable[[ScoreInputs], Score]], Scorer]:
    """Register ``score(inputs) -> Score`` under ``name`` (the ``pretrain.curriculum.scorer`` value)."""

    def wrap(score: Callable[[ScoreInputs], Score]) -> Scorer:
        return _REGISTRY.register(name)(Scorer(name, score, needs_cosine=needs_cosine, needs_truth=needs_truth, needs_window=needs_window))

    return wrap


@register("conflict", needs_cosine=True)
def conflict(x: ScoreInputs) -> Score:
    """Minus the conflict cosine of the two objectives' gradients (lower cosine = noisier)."""
    if x.cosine is None:
        raise ValueError("the conflict scorer needs the per-sample cosine")
    return Score(-x.cosine.detach().float())


@register("loss")
def small_loss(x: ScoreInputs) -> Score:
    """The per-sample loss of the droppable terms (small-loss criterion, Han et al. 2018)."""
    if x.l_vt is None or (x.granularity == "triplet" and x.l_va is None):
        raise ValueError("the loss scorer needs the per-sample losses")
    if x.granularity == "loss":
        return Score(x.l_vt.detach().float())
    assert x.l_va is not None
    return Score((x.l_va.detach() + x.vt_weight * x.l_vt.detach()).float())


@register("mixture", needs_window=True)
def mixture(x: ScoreInputs) -> Score:
    """Posterior of the high-loss component of a 2-Gaussian mixture fitted to recent losses, per objective (NCR, Huang et al. 2021)."""
    if x.window is None or x.l_va is None or x.l_vt is None:
        raise ValueError("the mixture scorer needs both per-sample losses and the loss window")
    if x.granularity == "triplet":
        # One mixture on what a triplet drop removes, the quantity the loss scorer ranks by.
        total = x.l_va.detach().float() + x.vt_weight * x.l_vt.detach().float()
        return Score(x.window.mixture("total", x.em_iterations, x.vt_weight).posterior_high(total))
    # NCR fits one mixture per objective: a triplet may be noisy in one pairing only.
    p_va = x.window.mixture("va", x.em_iterations).posterior_high(x.l_va)
    p_vt = x.window.mixture("vt", x.em_iterations).posterior_high(x.l_vt)
    va, vt = p_va > 0.5, p_vt > 0.5
    # A triplet dropped by rank although neither posterior passes 1/2 loses its video-text term, as
    # under every other scorer.
    return Score(torch.maximum(p_va, p_vt), (va, vt | ~va))


@register("oracle", needs_truth=True)
def oracle(x: ScoreInputs) -> Score:
    """Ground truth (positive control): 1 for a misaligned triplet; a dropped one loses exactly its misaligned pair's term."""
    assert x.truth is not None
    audio, text = x.truth.audio, x.truth.text
    # A triplet dropped by rank with no flag (the schedule asks for more than the noise) loses its
    # video-text term, as under every other scorer.
    return Score(x.truth.misaligned.float(), (audio, text | ~audio) if x.granularity == "loss" else None)


def quality_noise_scale(auroc: float) -> float:
    """The sd ``s`` of the noise added to 0/1 flags so that the score's AUROC is ``auroc``.

    Flagged scores are ``N(1, s^2)``, the others ``N(0, s^2)``: AUROC ``= Phi(1 / (s sqrt 2))``,
    so ``s = 1 / (sqrt 2 Phi^-1(auroc))``; 0 at AUROC 1 (the oracle).
    """
    if not 0.5 < auroc <= 1.0:
        raise ConfigError(f"pretrain.curriculum.quality_auroc: {auroc} is not in (0.5, 1]")
    if auroc >= 1.0:
        return 0.0
    return 1.0 / (math.sqrt(2.0) * NormalDist().inv_cdf(auroc))


@register("quality", needs_truth=True)
def quality(x: ScoreInputs) -> Score:
    """Ground truth plus Gaussian noise tuned to AUROC quality_auroc (a detector of known quality; deterministic per seed and step)."""
    assert x.truth is not None
    flags = x.truth.misaligned
    generator = torch.Generator().manual_seed(int(x.quality_seed) * 1_000_003 + int(x.step))
    noise = torch.randn(flags.shape, generator=generator).to(flags.device)
    return Score(flags.float() + quality_noise_scale(x.quality_auroc) * noise)
