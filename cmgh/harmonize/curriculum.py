"""Gradient-based curriculum (our reconstruction of CMGH's, Wu et al. 2022): score each triplet's noisiness, keep the cleanest.

CMGH's observation: a triplet whose video-audio and video-text gradients conflict (negative
cosine) is likely misaligned (ASR captions unrelated to what is seen, background music), so a
curriculum can leave out the most conflicting ones and learn from cleaner data. The cosine is a
hypothesis about noise, not a fact, so the scorer is pluggable (:mod:`cmgh.harmonize.scorers`:
``conflict``, ``loss``, and the positive controls ``oracle`` and ``quality``).

The kept fraction follows a schedule over steps: 1.0 during ``warmup_steps`` (every triplet),
then from ``start_keep`` to ``end_keep`` (``linear`` or ``cosine``; ``constant`` holds
``end_keep``). ``start_keep > end_keep`` tightens, ``start_keep < end_keep`` relaxes (an
easy-to-hard curriculum: start near ``1 - rate`` and admit more later).

Selection rules are registered by name like the realignment rules: ``none``, ``cmgh`` (keep the
scheduled fraction of least noisy samples, by rank) and ``threshold`` (after the warm-up, flag
every sample whose noisiness is above ``threshold``, whatever the schedule: for ``conflict``,
``cos < -threshold``; for ``oracle``, exactly the misaligned samples at the default 0).

Granularity: ``triplet`` drops the whole sample (both terms); ``loss`` drops only the terms the
scorer names (the video-text term by default; the oracle names the misaligned pair's term).
A flagged term is dropped (weight 0) or down-weighted to ``flagged_weight``. Samples without
text are never scored nor dropped (they carry no video-text term and no conflict). Selection is
deterministic (stable sort, ties by index) and the curriculum holds no mutable state: the
keep fraction is a function of the step, so a resumed run reproduces it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from cmgh.errors import ConfigError
from cmgh.harmonize import scorers
from cmgh.harmonize.truth import GroundTruth, missing_truth
from cmgh.registry import Registry

SCHEDULES = ("constant", "linear", "cosine")
GRANULARITIES = ("triplet", "loss")


class Selector:
    """A registered selection rule ``(noisiness [B], eligible [B], keep, **params) -> kept [B] bool``;
    ``scheduled``: whether it follows the keep schedule (else it acts on every step after the warm-up)."""

    def __init__(self, name: str, select: Callable[..., Tensor], *, scheduled: bool) -> None:
        self.name, self.select, self.scheduled = name, select, scheduled
        self.__doc__ = select.__doc__

    def __call__(self, noisiness: Tensor, eligible: Tensor, keep: float, **params: Any) -> Tensor:
        return self.select(noisiness, eligible, keep, **params)


_REGISTRY: Registry[Selector] = Registry("curriculum rule", "pretrain.curriculum.rule")
get, names, described = _REGISTRY.get, _REGISTRY.names, _REGISTRY.described


def register(name: str, *, scheduled: bool = True) -> Callable[[Callable[..., Tensor]], Selector]:
    """Register a selection function under ``name`` (the ``pretrain.curriculum.rule`` value)."""

    def wrap(select: Callable[..., Tensor]) -> Selector:
        return _REGISTRY.register(name)(Selector(name, select, scheduled=scheduled))

    return wrap


@register("none")
def keep_all(noisiness: Tensor, eligible: Tensor, keep: float, **_: Any) -> Tensor:
    """No curriculum: every sample is kept."""
    return torch.ones_like(eligible, dtype=torch.bool)


@register("cmgh")
def keep_cleanest(noisiness: Tensor, eligible: Tensor, keep: float, **_: Any) -> Tensor:
    """Keep the ceil(keep * n_eligible) least noisy eligible samples (rank by score); others always kept."""
    kept = torch.ones_like(eligible, dtype=torch.bool)
    idx = eligible.nonzero().flatten()
    n = idx.numel()
    n_keep = min(n, math.ceil(keep * n - 1e-9))
    if n_keep >= n:
        return kept
    order = torch.sort(noisiness[idx].detach().float(), stable=True).indices
    kept[idx[order[n_keep:]]] = False
    return kept


@register("threshold", scheduled=False)
def keep_below_threshold(noisiness: Tensor, eligible: Tensor, keep: float, *, threshold: float = 0.0, **_: Any) -> Tensor:
    """Flag every eligible sample whose noisiness is above threshold (conflict: cos < -threshold), after the warm-up."""
    return ~(eligible & (noisiness.detach().float() > threshold))


def keep_fraction(
    step: int,
    *,
    warmup_steps: int,
    total_steps: int,
    start_keep: float,
    end_keep: float,
    schedule: str = "linear",
) -> float:
    """Fraction of eligible samples kept at ``step`` (0-based).

    1.0 for ``step < warmup_steps``; then with progress ``p = (step - warmup) / (total - 1 - warmup)``
    clipped to [0, 1]: ``linear`` ``start + (end - start) p``, ``cosine``
    ``end + (start - end)(1 + cos(pi p)) / 2``, ``constant`` ``end_keep``.
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"pretrain.curriculum.schedule: {schedule!r} is not one of {', '.join(SCHEDULES)}")
    if step < warmup_steps:
        return 1.0
    if schedule == "constant":
        return float(end_keep)
    span = max(total_steps - 1 - warmup_steps, 1)
    p = min(max((step - warmup_steps) / span, 0.0), 1.0)
    if schedule == "linear":
        return float(start_keep + (end_keep - start_keep) * p)
    return float(end_keep + (start_keep - end_keep) * 0.5 * (1.0 + math.cos(math.pi * p)))


@dataclass
class CurriculumWeights:
    """Per-sample weights for each loss term and what was kept."""

    w_va: Tensor  # [B] float: weight of each sample's video-audio term
    w_vt: Tensor  # [B] float: weight of each sample's video-text term
    kept: Tensor  # [B] bool: not flagged as noisy
    noisiness: Tensor  # [B] float (0 where not eligible)
    keep: float  # scheduled fraction
    kept_fraction: float  # realised fraction among eligible samples (1.0 when none is eligible)


class Curriculum:
    """Schedule + scorer + selector + granularity; ``__call__`` gives this step's weights."""

    def __init__(
        self,
        rule: str = "none",
        scorer: str = "conflict",
        granularity: str = "triplet",
        schedule: str = "linear",
        warmup_steps: int = 0,
        start_keep: float = 1.0,
        end_keep: float = 1.0,
        total_steps: int = 1,
        vt_weight: float = 1.0,
        *,
        threshold: float = 0.0,
        flagged_weight: float = 0.0,
        quality_auroc: float = 0.8,
        quality_seed: int = 0,
    ) -> None:
        self.select = get(rule)
        self.score = scorers.get(scorer)
        if granularity not in GRANULARITIES:
            raise ConfigError(f"pretrain.curriculum.granularity: {granularity!r} is not one of {', '.join(GRANULARITIES)}")
        if schedule not in SCHEDULES:
            raise ConfigError(f"pretrain.curriculum.schedule: {schedule!r} is not one of {', '.join(SCHEDULES)}")
        if not 0.0 <= flagged_weight < 1.0:
            raise ConfigError(f"pretrain.curriculum.flagged_weight: {flagged_weight} is not in [0, 1)")
        if self.score.name == "quality":
            scorers.quality_noise_scale(quality_auroc)  # validated once, here
        self.rule, self.scorer, self.granularity, self.schedule = rule, scorer, granularity, schedule
        self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)
        self.start_keep, self.end_keep = float(start_keep), float(end_keep)
        self.vt_weight = float(vt_weight)
        self.threshold, self.flagged_weight = float(threshold), float(flagged_weight)
        self.quality_auroc, self.quality_seed = float(quality_auroc), int(quality_seed)

    @classmethod
    def from_config(cls, pretrain: Mapping[str, Any]) -> Curriculum:
        """From the ``pretrain`` config section (uses ``curriculum.*``, ``steps`` and ``vt_weight``)."""
        c = pretrain["curriculum"]
        return cls(
            rule=c["rule"],
            scorer=c["scorer"],
            granularity=c["granularity"],
            schedule=c["schedule"],
            warmup_steps=c["warmup_steps"],
            start_keep=c["start_keep"],
            end_keep=c["end_keep"],
            total_steps=pretrain["steps"],
            vt_weight=pretrain.get("vt_weight", 1.0),
            threshold=c["threshold"],
            flagged_weight=c["flagged_weight"],
            quality_auroc=c["quality_auroc"],
            quality_seed=c["quality_seed"],
        )

    @property
    def active(self) -> bool:
        return self.rule != "none"

    @property
    def needs_cosine(self) -> bool:
        """Whether the scores need the per-sample gradients (so they must be computed first)."""
        return self.active and self.score.needs_cosine

    @property
    def needs_truth(self) -> bool:
        """Whether the scores read the generator's ground truth (a control scorer)."""
        return self.active and self.score.needs_truth

    def require_truth(self, truth: GroundTruth | None) -> None:
        """Refuse, from the first step, to train a ground-truth scorer on data without ground truth."""
        if self.needs_truth and truth is None:
            raise missing_truth(self.scorer)

    def keep_at(self, step: int) -> float:
        """The scheduled kept fraction (1.0 when inactive, in the warm-up, or for an unscheduled rule)."""
        if not self.active or not self.select.scheduled:
            return 1.0
        return keep_fraction(
            step,
            warmup_steps=self.warmup_steps,
            total_steps=self.total_steps,
            start_keep=self.start_keep,
            end_keep=self.end_keep,
            schedule=self.schedule,
        )

    def selecting(self, step: int) -> bool:
        """Whether this step's samples are scored and may be dropped (a function of the step only)."""
        if not self.active:
            return False
        return self.keep_at(step) < 1.0 if self.select.scheduled else step >= self.warmup_steps

    def noisiness(
        self,
        *,
        cosine: Tensor | None = None,
        l_va: Tensor | None = None,
        l_vt: Tensor | None = None,
        truth: GroundTruth | None = None,
        step: int = 0,
    ) -> Tensor:
        """Higher = noisier: the scorer's verdict (``conflict``: ``-cosine``; ``loss``: the droppable terms' loss; ...)."""
        return self._score(step, cosine, l_va, l_vt, truth).noisiness

    def _score(
        self, step: int, cosine: Tensor | None, l_va: Tensor | None, l_vt: Tensor | None, truth: GroundTruth | None
    ) -> scorers.Score:
        return self.score(
            scorers.ScoreInputs(
                step, self.granularity, self.vt_weight, cosine, l_va, l_vt, truth, self.quality_auroc, self.quality_seed
            )
        )

    def __call__(
        self,
        step: int,
        valid_vt: Tensor,
        *,
        cosine: Tensor | None = None,
        l_va: Tensor | None = None,
        l_vt: Tensor | None = None,
        truth: GroundTruth | None = None,
    ) -> CurriculumWeights:
        keep = self.keep_at(step)
        ones = torch.ones(valid_vt.shape, dtype=torch.float32, device=valid_vt.device)
        terms = None
        if not self.selecting(step):
            noisiness = torch.zeros_like(ones)
            kept = torch.ones_like(valid_vt, dtype=torch.bool)
        else:
            score = self._score(step, cosine, l_va, l_vt, truth)
            noisiness = torch.where(valid_vt, score.noisiness.to(ones.device), torch.zeros_like(ones))
            kept, terms = self.select(noisiness, valid_vt, keep, threshold=self.threshold), score.terms
        w_va, w_vt = self._term_weights(kept, terms, ones)
        n_eligible = int(valid_vt.sum())
        kept_fraction = float((kept & valid_vt).sum()) / n_eligible if n_eligible else 1.0
        return CurriculumWeights(w_va, w_vt, kept, noisiness, keep, kept_fraction)

    def _term_weights(self, kept: Tensor, terms: tuple[Tensor, Tensor] | None, ones: Tensor) -> tuple[Tensor, Tensor]:
        """``(w_va, w_vt)``: 1 for a kept term, ``flagged_weight`` (0: dropped) for a flagged one."""
        flagged = torch.full_like(ones, self.flagged_weight)
        if self.granularity == "triplet":
            w = torch.where(kept, ones, flagged)
            return w, w.clone()
        dropped = ~kept
        loses_va, loses_vt = terms if terms is not None else (torch.zeros_like(kept), torch.ones_like(kept))
        w_va = torch.where(dropped & loses_va.to(kept.device), flagged, ones)
        return w_va, torch.where(dropped & loses_vt.to(kept.device), flagged, ones)

    def state_dict(self) -> dict[str, Any]:
        """Stateless (the schedule depends on the step only); kept for a uniform checkpoint API."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None
