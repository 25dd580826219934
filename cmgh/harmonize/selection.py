"""Curriculum selection rules, registered by name (``pretrain.curriculum.rule``), and the keep schedule.

A rule turns the scorer's noisiness into the kept rows: ``none``, ``cmgh`` (the scheduled fraction
by rank), ``threshold`` (every score above a threshold after the warm-up) and ``coteaching``
(Co-teaching's forget-rate ramp). :func:`keep_fraction` is the schedule the ``cmgh`` rule follows.
:mod:`cmgh.harmonize.curriculum` binds them to a scorer and a granularity.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from cmgh.errors import ConfigError
from cmgh.registry import Registry

SCHEDULES = ("constant", "linear", "cosine")


class Selector:
    """A registered selection rule ``(noisiness [B], eligible [B], keep, **params) -> kept [B] bool``;
    ``scheduled``: whether it follows the keep schedule (else it acts on every step after the warm-up);
    ``forget_ramp``: whether its keep is instead Co-teaching's ``1 - R(t)`` (:meth:`Curriculum.forget_rate`)."""

    def __init__(self, name: str, select: Callable[..., Tensor], *, scheduled: bool, forget_ramp: bool = False) -> None:
        if scheduled and forget_ramp:
            raise ValueError(f"curriculum rule {name!r}: follows either the keep schedule or the forget-rate ramp")
        self.name, self.select, self.scheduled, self.forget_ramp = name, select, scheduled, forget_ramp
        self.__doc__ = select.__doc__

    def __call__(self, noisiness: Tensor, eligible: Tensor, keep: float, **params: Any) -> Tensor:
        return self.select(noisiness, eligible, keep, **params)


_REGISTRY: Registry[Selector] = Registry("curriculum rule", "pretrain.curriculum.rule")
get, names, described = _REGISTRY.get, _REGISTRY.names, _REGISTRY.described


def register(name: str, *, scheduled: bool = True, forget_ramp: bool = False) -> Callable[[Callable[..., Tensor]], Selector]:
    """Register a selection function under ``name`` (the ``pretrain.curriculum.rule`` value)."""

    def wrap(select: Callable[..., Tensor]) -> Selector:
        return _REGISTRY.register(name)(Selector(name, select, scheduled=scheduled, forget_ramp=forget_ramp))

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


@register("coteaching", scheduled=False, forget_ramp=True)
def keep_small_loss(noisiness: Tensor, eligible: Tensor, keep: float, **params: Any) -> Tensor:
    """Co-teaching's small-loss rule (Han et al. 2018, one network): keep the 1 - R(t) least noisy, R ramping to the noise rate.

    The selection is :func:`keep_cleanest`'s; what differs is ``keep`` (:meth:`Curriculum.forget_rate`).
    Under data parallelism each rank ranks its own rows against the shared ``keep`` (the noise rate
    is fitted on the global window, so every rank forgets the same share): a per-rank quota, so the
    globally dropped set can differ from one process ranking the whole batch by rounding and by
    which ranks hold the noisy rows.
    """
    return keep_cleanest(noisiness, eligible, keep, **params)


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
