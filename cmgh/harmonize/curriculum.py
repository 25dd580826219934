"""Gradient-based curriculum (CMGH, Wu et al. 2022, Sec. 3.3): score each triplet's noisiness, keep the cleanest.

CMGH's observation: a triplet whose video-audio and video-text gradients conflict (negative
cosine) is likely misaligned (ASR captions unrelated to what is seen, background music), so a
curriculum that trains on every triplet first and then progressively leaves out the most
conflicting ones learns from cleaner data. The cosine is a hypothesis about noise, not a fact,
so the scorer is pluggable (docs/architecture.md, "The training step"):

* ``conflict``: noisiness ``= -cos(g_va, g_vt)`` (lower cosine = noisier), CMGH's criterion;
* ``loss``: the small-loss criterion (Han et al. 2018, Co-teaching): noisiness ``=`` the
  per-sample loss (``l_va + lambda l_vt`` for ``triplet``, ``l_vt`` for ``loss`` granularity).

The kept fraction follows a schedule over steps: 1.0 during ``warmup_steps`` (every triplet),
then from ``start_keep`` to ``end_keep`` (``linear`` or ``cosine``; ``constant`` holds
``end_keep``). ``start_keep > end_keep`` tightens, ``start_keep < end_keep`` relaxes.

Granularity: ``triplet`` drops the whole sample (both terms); ``loss`` drops only the
video-text term of flagged samples and keeps their video-audio term. Samples without text are
never scored nor dropped (they carry no video-text term and no conflict). Selection is
deterministic (stable sort, ties by index) and the curriculum holds no mutable state: the
keep fraction is a function of the step, so a resumed run reproduces it.

Curriculum rules are registered by name like the realignment rules (``none``, ``cmgh``): a rule
maps ``(noisiness [B], eligible [B], keep) -> kept [B] bool``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from cmgh.errors import ConfigError
from cmgh.registry import Registry

Selector = Callable[[Tensor, Tensor, float], Tensor]
_REGISTRY: Registry[Selector] = Registry("curriculum rule", "pretrain.curriculum.rule")
SCHEDULES = ("constant", "linear", "cosine")
SCORERS = ("conflict", "loss")
GRANULARITIES = ("triplet", "loss")


register, get, names = _REGISTRY.register, _REGISTRY.get, _REGISTRY.names


@register("none")
def keep_all(noisiness: Tensor, eligible: Tensor, keep: float) -> Tensor:
    """No curriculum: every sample is kept."""
    return torch.ones_like(eligible, dtype=torch.bool)


@register("cmgh")
def keep_cleanest(noisiness: Tensor, eligible: Tensor, keep: float) -> Tensor:
    """Keep the ``ceil(keep * n_eligible)`` least noisy eligible samples (CMGH Sec. 3.3); others always kept."""
    kept = torch.ones_like(eligible, dtype=torch.bool)
    idx = eligible.nonzero().flatten()
    n = idx.numel()
    n_keep = min(n, math.ceil(keep * n - 1e-9))
    if n_keep >= n:
        return kept
    order = torch.sort(noisiness[idx].detach().float(), stable=True).indices
    kept[idx[order[n_keep:]]] = False
    return kept


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
    ) -> None:
        self.select = get(rule)
        if scorer not in SCORERS:
            raise ConfigError(f"pretrain.curriculum.scorer: {scorer!r} is not one of {', '.join(SCORERS)}")
        if granularity not in GRANULARITIES:
            raise ConfigError(f"pretrain.curriculum.granularity: {granularity!r} is not one of {', '.join(GRANULARITIES)}")
        if schedule not in SCHEDULES:
            raise ConfigError(f"pretrain.curriculum.schedule: {schedule!r} is not one of {', '.join(SCHEDULES)}")
        self.rule, self.scorer, self.granularity, self.schedule = rule, scorer, granularity, schedule
        self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)
        self.start_keep, self.end_keep = float(start_keep), float(end_keep)
        self.vt_weight = float(vt_weight)

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
        )

    @property
    def active(self) -> bool:
        return self.rule != "none"

    @property
    def needs_cosine(self) -> bool:
        """Whether the scores need the per-sample gradients (so they must be computed first)."""
        return self.active and self.scorer == "conflict"

    def keep_at(self, step: int) -> float:
        if not self.active:
            return 1.0
        return keep_fraction(
            step,
            warmup_steps=self.warmup_steps,
            total_steps=self.total_steps,
            start_keep=self.start_keep,
            end_keep=self.end_keep,
            schedule=self.schedule,
        )

    def noisiness(
        self, *, cosine: Tensor | None = None, l_va: Tensor | None = None, l_vt: Tensor | None = None
    ) -> Tensor:
        """Higher = noisier. ``conflict``: ``-cosine``; ``loss``: the per-sample loss of the droppable terms."""
        if self.scorer == "conflict":
            if cosine is None:
                raise ValueError("the conflict scorer needs the per-sample cosine")
            return -cosine.detach().float()
        if l_vt is None or (self.granularity == "triplet" and l_va is None):
            raise ValueError("the loss scorer needs the per-sample losses")
        if self.granularity == "loss":
            return l_vt.detach().float()
        return (l_va.detach() + self.vt_weight * l_vt.detach()).float()

    def __call__(
        self,
        step: int,
        valid_vt: Tensor,
        *,
        cosine: Tensor | None = None,
        l_va: Tensor | None = None,
        l_vt: Tensor | None = None,
    ) -> CurriculumWeights:
        keep = self.keep_at(step)
        ones = torch.ones(valid_vt.shape, dtype=torch.float32, device=valid_vt.device)
        if not self.active or keep >= 1.0:
            noisiness = torch.zeros_like(ones)
            kept = torch.ones_like(valid_vt, dtype=torch.bool)
        else:
            noisiness = torch.where(valid_vt, self.noisiness(cosine=cosine, l_va=l_va, l_vt=l_vt), torch.zeros_like(ones))
            kept = self.select(noisiness, valid_vt, keep)
        w_vt = kept.float()
        w_va = w_vt.clone() if self.granularity == "triplet" else ones
        n_eligible = int(valid_vt.sum())
        kept_fraction = float((kept & valid_vt).sum()) / n_eligible if n_eligible else 1.0
        return CurriculumWeights(w_va, w_vt, kept, noisiness, keep, kept_fraction)

    def state_dict(self) -> dict[str, Any]:
        """Stateless (the schedule depends on the step only); kept for a uniform checkpoint API."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None
