"""Gradient-based curriculum (our reconstruction of CMGH's, Wu et al. 2022): score each triplet's noisiness, keep the cleanest.

CMGH's observation: a triplet whose video-audio and video-text gradients conflict (negative
cosine) is likely misaligned (ASR captions unrelated to what is seen, background music), so a
curriculum can leave out the most conflicting ones and learn from cleaner data. The cosine is a
hypothesis about noise, not a fact, so the scorer is pluggable (:mod:`cmgh.harmonize.scorers`:
``conflict``, ``loss``, the noisy-correspondence rival ``mixture`` and the positive controls
``oracle`` and ``quality``).

The kept fraction follows a schedule over steps: 1.0 during ``warmup_steps`` (every triplet),
then from ``start_keep`` to ``end_keep`` (``linear`` or ``cosine``; ``constant`` holds
``end_keep``). ``start_keep > end_keep`` tightens, ``start_keep < end_keep`` relaxes (an
easy-to-hard curriculum: start near ``1 - rate`` and admit more later).

Selection rules are registered by name like the realignment rules: ``none``, ``cmgh`` (keep the
scheduled fraction of least noisy samples, by rank), ``threshold`` (after the warm-up, flag
every sample whose noisiness is above ``threshold``, whatever the schedule: for ``conflict``,
``cos < -threshold``; for ``oracle``, exactly the misaligned samples at the default 0; for
``mixture``, 0.5 keeps the low-loss component) and ``coteaching`` (Co-teaching's small-loss rule,
Han et al. NeurIPS 2018, single network: rank as ``cmgh`` does but keep ``1 - R(t)`` with its own
forget-rate ramp ``R(t) = tau min((t - warmup) / ramp_steps, 1)``, ``tau`` the estimated noise rate;
it ignores ``start_keep``/``end_keep``).

Granularity: ``triplet`` drops the whole sample (both terms); ``loss`` drops only the terms the
scorer names (the video-text term by default; the oracle names the misaligned pair's term).
A flagged term is dropped (weight 0) or down-weighted to ``flagged_weight``. Samples without
text are never scored nor dropped (they carry no video-text term and no conflict). Selection is
deterministic (stable sort, ties by index). The one piece of state is the loss window
(:class:`~cmgh.harmonize.scorers.LossWindow`: the eligible losses of the last ``window_steps``
global batches) that the ``mixture`` scorer and ``coteaching``'s ``noise_rate: auto`` fit their
mixture to; it is in :meth:`Curriculum.state_dict`, so a resumed run reproduces it. Every other
choice keeps a fraction that is a function of the step only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from cmgh.errors import ConfigError
from cmgh.harmonize import scorers
from cmgh.harmonize.selection import SCHEDULES, Selector, described, get, keep_fraction, names, register  # noqa: F401  (the curriculum's API)
from cmgh.harmonize.truth import GroundTruth, missing_truth

GRANULARITIES = ("triplet", "loss")
Gather = Callable[[Tensor], Tensor]  # a non-differentiable all-gather: this rank's [b] -> the global [B], rows in rank order


@dataclass
class CurriculumWeights:
    """Per-sample weights for each loss term and what was kept."""

    w_va: Tensor  # [B] float: weight of each sample's video-audio term
    w_vt: Tensor  # [B] float: weight of each sample's video-text term
    kept: Tensor  # [B] bool: not flagged as noisy
    noisiness: Tensor  # [B] float (0 where not eligible)
    keep: float  # fraction asked for this step: the schedule's, or co-teaching's 1 - R(t) (1.0 for unscheduled rules)
    kept_fraction: float  # realised fraction among eligible samples (1.0 when none is eligible)


class Curriculum:
    """Schedule + scorer + selector + granularity (+ the loss window); ``__call__`` gives this step's weights."""

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
        window_steps: int = 10,
        em_iterations: int = 50,
        ramp_steps: int = 100,
        noise_rate: float | str = "auto",
        max_forget: float = 0.5,
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
        for key, value in (("mixture.window_steps", window_steps), ("mixture.em_iterations", em_iterations), ("coteaching.ramp_steps", ramp_steps)):
            if int(value) < 1:
                raise ConfigError(f"pretrain.curriculum.{key}: {value} is less than the minimum of 1")
        if not (noise_rate == "auto" or (not isinstance(noise_rate, str) and 0.0 <= float(noise_rate) < 1.0)):
            raise ConfigError(f"pretrain.curriculum.coteaching.noise_rate: {noise_rate!r} is neither auto nor in [0, 1)")
        if not 0.0 <= max_forget < 1.0:
            raise ConfigError(f"pretrain.curriculum.coteaching.max_forget: {max_forget} is not in [0, 1)")
        self.rule, self.scorer, self.granularity, self.schedule = rule, scorer, granularity, schedule
        self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)
        self.start_keep, self.end_keep = float(start_keep), float(end_keep)
        self.vt_weight = float(vt_weight)
        self.threshold, self.flagged_weight = float(threshold), float(flagged_weight)
        self.quality_auroc, self.quality_seed = float(quality_auroc), int(quality_seed)
        self.window_steps, self.em_iterations, self.ramp_steps = int(window_steps), int(em_iterations), int(ramp_steps)
        self.noise_rate: float | str = noise_rate if noise_rate == "auto" else float(noise_rate)
        self.max_forget = float(max_forget)
        uses_window = self.score.needs_window or (self.select.forget_ramp and self.noise_rate == "auto")
        self.window: scorers.LossWindow | None = scorers.LossWindow(self.window_steps) if uses_window else None

    @classmethod
    def from_config(cls, pretrain: Mapping[str, Any]) -> Curriculum:
        """From the ``pretrain`` config section (uses ``curriculum.*``, ``steps`` and ``vt_weight``)."""
        c = pretrain["curriculum"]
        mixture, coteaching = c["mixture"], c["coteaching"]
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
            window_steps=mixture["window_steps"],
            em_iterations=mixture["em_iterations"],
            ramp_steps=coteaching["ramp_steps"],
            noise_rate=coteaching["noise_rate"],
            max_forget=coteaching["max_forget"],
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
        """The fraction to keep: the schedule's, or ``1 - forget_rate(step)`` for ``coteaching`` (1.0 when
        inactive, in the warm-up, or for an unscheduled rule). With ``noise_rate: auto`` it reads the window."""
        if not self.active:
            return 1.0
        if self.select.forget_ramp:
            return 1.0 - self.forget_rate(step)
        if not self.select.scheduled:
            return 1.0
        return keep_fraction(
            step,
            warmup_steps=self.warmup_steps,
            total_steps=self.total_steps,
            start_keep=self.start_keep,
            end_keep=self.end_keep,
            schedule=self.schedule,
        )

    def estimated_noise_rate(self) -> float:
        """Co-teaching's ``tau``: the fixed ``noise_rate``, or (``auto``) the mixing weight of the high-loss
        component of the mixture fitted to the window's loss that the ``loss`` scorer ranks by (``l_vt``
        under ``loss`` granularity, ``l_va + vt_weight l_vt`` under ``triplet``), clipped to ``[0, max_forget]``."""
        if self.noise_rate != "auto":
            return float(self.noise_rate)
        assert self.window is not None
        objective = "vt" if self.granularity == "loss" else "total"
        return min(max(self.window.mixture(objective, self.em_iterations, self.vt_weight).noise_rate, 0.0), self.max_forget)

    def forget_rate(self, step: int) -> float:
        """Co-teaching's ``R(t) = tau min((t - warmup_steps) / ramp_steps, 1)`` (0 in the warm-up): forget
        little while the network still fits clean and noisy pairs alike, then the estimated noise share."""
        if step < self.warmup_steps:
            return 0.0
        return self.estimated_noise_rate() * min((step - self.warmup_steps) / self.ramp_steps, 1.0)

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
        """Higher = noisier: the scorer's verdict (``conflict``: ``-cosine``; ``loss``: the droppable terms' loss; ...).

        A query: the ``mixture`` scorer reads the window with these losses appended, as ``__call__``
        would, but the window is left as it was.
        """
        window = self.window
        if window is not None and l_va is not None and l_vt is not None:
            window = window.pushed(l_va, l_vt)
        return self._score(step, cosine, l_va, l_vt, truth, window).noisiness

    def _score(
        self,
        step: int,
        cosine: Tensor | None,
        l_va: Tensor | None,
        l_vt: Tensor | None,
        truth: GroundTruth | None,
        window: scorers.LossWindow | None,
    ) -> scorers.Score:
        return self.score(
            scorers.ScoreInputs(
                step=step,
                granularity=self.granularity,
                vt_weight=self.vt_weight,
                cosine=cosine,
                l_va=l_va,
                l_vt=l_vt,
                truth=truth,
                quality_auroc=self.quality_auroc,
                quality_seed=self.quality_seed,
                window=window,
                em_iterations=self.em_iterations,
            )
        )

    def remember(self, valid_vt: Tensor, l_va: Tensor | None, l_vt: Tensor | None, gather: Gather | None = None) -> None:
        """Append this step's global batch to the loss window: the eligible rows' finite losses.

        Ineligible rows travel as NaN, so each loss needs one all-gather (``gather``: this rank's
        ``[b]`` to the global ``[B]``, rows in rank order) and every rank fits the same mixture.
        """
        if self.window is None:
            return
        if l_va is None or l_vt is None:
            raise ValueError("the loss window needs both per-sample losses")
        nan = torch.full(valid_vt.shape, float("nan"), device=l_va.device)
        va = torch.where(valid_vt.to(l_va.device), l_va.detach().float(), nan)
        vt = torch.where(valid_vt.to(l_vt.device), l_vt.detach().float(), nan.to(l_vt.device))
        if gather is not None:
            va, vt = gather(va), gather(vt)
        self.window = self.window.pushed(va, vt)

    def __call__(
        self,
        step: int,
        valid_vt: Tensor,
        *,
        cosine: Tensor | None = None,
        l_va: Tensor | None = None,
        l_vt: Tensor | None = None,
        truth: GroundTruth | None = None,
        gather: Gather | None = None,
    ) -> CurriculumWeights:
        """This step's weights for this process's rows (``valid_vt``: the eligible ones, with both terms).

        ``gather``: under data parallelism, a non-differentiable all-gather (this rank's ``[b]`` tensor
        to the global ``[B]``, rows in rank order; None: one process). Only the loss window reads the
        global batch, so two ranks fit the mixture that one process on their joint batch fits; scoring
        and selection act on this rank's rows. Call it once per step (it appends to the window), warm-up
        steps included (they fill the window).
        """
        self.remember(valid_vt, l_va, l_vt, gather)
        keep = self.keep_at(step)
        ones = torch.ones(valid_vt.shape, dtype=torch.float32, device=valid_vt.device)
        terms = None
        if not self.selecting(step):
            noisiness = torch.zeros_like(ones)
            kept = torch.ones_like(valid_vt, dtype=torch.bool)
        else:
            score = self._score(step, cosine, l_va, l_vt, truth, self.window)
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
        """The loss window where one is kept (``{}`` otherwise: the schedule depends on the step only)."""
        return {} if self.window is None else {"window": self.window.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the loss window (a state without one, as saved by a stateless curriculum, leaves it empty)."""
        if self.window is not None and "window" in state:
            self.window = scorers.LossWindow.from_state(self.window_steps, state["window"])

