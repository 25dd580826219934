"""Curriculum scorers: each triplet's noisiness (higher = noisier), registered by name (``pretrain.curriculum.scorer``).

* ``conflict``: ``-cos(g_va, g_vt)`` at the meeting point, our reading of CMGH's criterion;
* ``loss``: the small-loss criterion (Han et al. 2018, Co-teaching): the per-sample loss of the
  droppable terms (``l_va + lambda l_vt`` for ``triplet`` granularity, ``l_vt`` for ``loss``);
* ``oracle``: the generator's ground truth (:mod:`cmgh.harmonize.truth`), a positive control:
  what a perfect detector would let the curriculum do;
* ``quality``: the ground truth plus Gaussian noise whose scale makes the score's AUROC for the
  flags equal ``quality_auroc``: a detector of known quality, to draw benefit against detection
  quality.

A scorer returns a :class:`Score`: the noisiness, and under ``loss`` granularity which terms a
dropped triplet loses (by default its video-text term only; the oracle names the misaligned
pair's term: NCE for misaligned audio, MIL-NCE for misaligned text).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import torch
from torch import Tensor

from cmgh.errors import ConfigError
from cmgh.harmonize.truth import GroundTruth, missing_truth
from cmgh.registry import Registry


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


@dataclass(frozen=True)
class Score:
    """A scorer's verdict: ``noisiness [B]``; ``terms = (loses_va, loses_vt) [B] bool`` under ``loss``
    granularity (``None``: a dropped triplet loses its video-text term only)."""

    noisiness: Tensor
    terms: tuple[Tensor, Tensor] | None = None


class Scorer:
    """A registered scorer and what it needs computed first (the cosine, the ground truth)."""

    def __init__(self, name: str, score: Callable[[ScoreInputs], Score], *, needs_cosine: bool, needs_truth: bool) -> None:
        self.name, self.score = name, score
        self.needs_cosine, self.needs_truth = needs_cosine, needs_truth
        self.__doc__ = score.__doc__

    def __call__(self, inputs: ScoreInputs) -> Score:
        if self.needs_truth and inputs.truth is None:
            raise missing_truth(self.name)
        return self.score(inputs)


_REGISTRY: Registry[Scorer] = Registry("curriculum scorer", "pretrain.curriculum.scorer")
get, names, described = _REGISTRY.get, _REGISTRY.names, _REGISTRY.described


def register(name: str, *, needs_cosine: bool = False, needs_truth: bool = False) -> Callable[[Callable[[ScoreInputs], Score]], Scorer]:
    """Register ``score(inputs) -> Score`` under ``name`` (the ``pretrain.curriculum.scorer`` value)."""

    def wrap(score: Callable[[ScoreInputs], Score]) -> Scorer:
        return _REGISTRY.register(name)(Scorer(name, score, needs_cosine=needs_cosine, needs_truth=needs_truth))

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
