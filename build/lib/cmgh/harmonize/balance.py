"""Objective balancers: per-step multipliers ``(m_va, m_vt)`` of ``m_va * L_va + m_vt * lambda * L_vt``.

The harmonizers act on gradients and the curriculum on samples; a balancer acts on whole
objectives from their batch-mean losses only (no gradient, no extra forward), so it costs
nothing beyond a plain step. It sees detached floats: the trainer passes the global batch's
means, identical on every data-parallel rank, so the balancer's state stays identical across
ranks. A multiplier of exactly 0.0 means "this objective is not part of this step": the trainer
leaves it out of the graph, so parameters it alone reaches get no gradient at all.

Balancers are registered by name (the ``pretrain.balance.method`` value): ``sum``,
``alternate`` and ``famo``. ``state_dict()`` holds only tensors, numbers and lists, so it goes
into a checkpoint loaded with ``torch.load(weights_only=True)`` and a resumed run continues
identically.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any, ClassVar

import torch

from cmgh.errors import ConfigError
from cmgh.registry import Registry

ALTERNATE_SCHEDULES = ("cycle", "random")


class Balancer:
    """Base: the plain sum, stateless; subclasses override ``weights`` and, when they hold state,
    ``state_dict``/``load_state_dict``."""

    name: ClassVar[str] = ""

    @classmethod
    def from_config(cls, balance: Mapping[str, Any]) -> Balancer:
        """From ``pretrain.balance`` (a balancer reads its own sub-section)."""
        return cls()

    def weights(self, step: int, l_va: float, l_vt: float) -> tuple[float, float]:
        return 1.0, 1.0

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None


_REGISTRY: Registry[type[Balancer]] = Registry("objective balancer", "pretrain.balance.method")
get, names, described = _REGISTRY.get, _REGISTRY.names, _REGISTRY.described


def register(name: str) -> Callable[[type[Balancer]], type[Balancer]]:
    """Register a :class:`Balancer` subclass under ``name`` (the ``pretrain.balance.method`` value)."""

    def wrap(cls: type[Balancer]) -> type[Balancer]:
        cls.name = name
        return _REGISTRY.register(name)(cls)

    return wrap


def from_config(pretrain: Mapping[str, Any]) -> Balancer:
    """The balancer ``pretrain.balance.method`` names, configured from ``pretrain.balance``."""
    balance = pretrain.get("balance") or {}
    return get(balance.get("method", "sum")).from_config(balance)


@register("sum")
class Sum(Balancer):
    """Plain sum (unitary scalarization): (1, 1) every step; the static weight is pretrain.vt_weight (lambda), swept by Optuna.

    Unitary scalarization with a tuned static weight is the strong baseline multi-task
    optimizers have to beat (Kurin et al. 2022; Xin et al. 2022), so the default leaves the
    balance to ``vt_weight`` and the sweep.
    """


@register("alternate")
class Alternate(Balancer):
    """Alternating gradient descent (IMP, Akbari et al. 2023): each step updates on one objective, va or vt.

    ``schedule: cycle``: a fixed, evenly spread pattern with a ``va_share`` of va steps (an
    accumulator rule: step t is va when ``ceil((t+1) s) > ceil(t s)``; 0.5 gives va, vt, va, vt;
    0.25 gives va, vt, vt, vt). ``schedule: random``: va with probability ``va_share``, drawn
    from a generator seeded by ``(seed, step)``. Both are functions of the step only: a resumed
    run and every data-parallel rank get the same sequence, and there is no state to save.

    Optimizer state: one optimizer serves both objectives, so AdamW's moments of the shared
    parameters (the video tower) mix both objectives' gradients. Parameters an objective does
    not reach (the audio tower on a vt step, the text tower on a va step, the other head) get no
    gradient (``.grad`` is None, since the trainer leaves the 0-weighted term out of the graph),
    and AdamW skips them entirely (no moment update, no weight decay): they are updated on their
    own objective's steps only, and their bias correction counts the optimizer's steps, not theirs.

    Cost: a step costs about a plain step, since the forward still encodes all three modalities;
    IMP's saving comes from skipping the unused modality's forward, which this trainer does not do.
    """

    def __init__(self, va_share: float = 0.5, schedule: str = "cycle", seed: int = 0) -> None:
        if not 0.0 <= va_share <= 1.0:
            raise ConfigError(f"pretrain.balance.alternate.va_share: {va_share} is not in [0, 1]")
        if schedule not in ALTERNATE_SCHEDULES:
            raise ConfigError(f"pretrain.balance.alternate.schedule: {schedule!r} is not one of {', '.join(ALTERNATE_SCHEDULES)}")
        self.va_share, self.schedule, self.seed = float(va_share), schedule, int(seed)
        # exact rational share (0.1 is 1/10, not its binary float), so the cycle has no rounding drift
        self._share = Fraction(self.va_share).limit_denominator(1_000_000)

    @classmethod
    def from_config(cls, balance: Mapping[str, Any]) -> Alternate:
        a = balance.get("alternate") or {}
        return cls(a.get("va_share", 0.5), a.get("schedule", "cycle"), a.get("seed", 0))

    def is_va(self, step: int) -> bool:
        """Whether ``step`` updates on the video-audio objective (else on the video-text one)."""
        step = int(step)
        if self.schedule == "cycle":
            n, d = self._share.numerator, self._share.denominator
            return -(-(step + 1) * n // d) > -(-step * n // d)  # ceil((t+1) s) > ceil(t s)
        # str seeding hashes with SHA-512: the same on every process, whatever PYTHONHASHSEED
        return random.Random(f"cmgh.balance.alternate:{self.seed}:{step}").random() < self.va_share

    def weights(self, step: int, l_va: float, l_vt: float) -> tuple[float, float]:
        return (1.0, 0.0) if self.is_va(step) else (0.0, 1.0)


@register("famo")
class Famo(Balancer):
    """FAMO (Liu et al., NeurIPS 2023): adaptive weights that balance the objectives' log-loss decrease, O(1) per step.

    Logits ``xi`` (init 0), ``z = softmax(xi)``, ``D_i = l_i - min_loss_i + eps``,
    ``c = sum_j z_j / D_j``: the multipliers ``m_i = k z_i / (c D_i)`` make the update the
    gradient of FAMO's weighted loss ``sum_i z_i log D_i / c``, times ``k = 2`` (the number of
    objectives; our scaling, not the paper's: equal logits and equal losses give (1, 1), the
    plain sum's scale, so ``grad_clip`` and the learning rate keep their meaning).

    Logit update (before this step's multipliers): with the previous step's losses,
    ``delta = log D(l_{t-1}) - log D(l_t)`` (each objective's log-loss decrease), the logit
    gradient is ``J_softmax(xi)^T delta`` and ``xi`` takes one step of
    ``torch.optim.Adam([xi], lr, weight_decay=decay)``, as the official implementation does.

    Our choice: the published algorithm evaluates ``l_{t+1}`` on the same batch after the
    update (one extra forward); we use the next batch's loss (the loss history: no extra
    forward, truly O(1)). The consequence: ``delta`` mixes the update's effect with the
    batch-to-batch loss noise, which Adam's moments average out only over several steps.
    ``L_vt`` keeps its ``vt_weight`` (lambda) factor on top of ``m_vt``; FAMO is invariant to
    the losses' scales, so ``vt_weight: 1`` leaves the balance to FAMO alone.
    A step with a non-finite loss leaves the state untouched and gets (1, 1) (the trainer skips it).
    """

    k: ClassVar[float] = 2.0  # number of objectives: the scale of the plain sum

    def __init__(
        self,
        lr: float = 0.025,
        decay: float = 0.001,
        min_loss_va: float = 0.0,
        min_loss_vt: float = 0.0,
        eps: float = 1e-8,
    ) -> None:
        if not lr > 0:
            raise ConfigError(f"pretrain.balance.famo.lr: {lr} is not above 0")
        if not eps > 0:
            raise ConfigError(f"pretrain.balance.famo.eps: {eps} is not above 0")
        self.lr, self.decay, self.eps = float(lr), float(decay), float(eps)
        self.min_losses = torch.tensor([float(min_loss_va), float(min_loss_vt)], dtype=torch.float64)
        self.xi = torch.zeros(2, dtype=torch.float64, requires_grad=True)
        self._opt = torch.optim.Adam([self.xi], lr=self.lr, weight_decay=self.decay)
        self._prev: torch.Tensor | None = None  # the previous step's losses [2]

    @classmethod
    def from_config(cls, balance: Mapping[str, Any]) -> Famo:
        f = balance.get("famo") or {}
        return cls(
            lr=f.get("lr", 0.025),
            decay=f.get("decay", 0.001),
            min_loss_va=f.get("min_loss_va", 0.0),
            min_loss_vt=f.get("min_loss_vt", 0.0),
            eps=f.get("eps", 1e-8),
        )

    def _log_d(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.log(losses - self.min_losses + self.eps)

    def weights(self, step: int, l_va: float, l_vt: float) -> tuple[float, float]:
        if not (math.isfinite(l_va) and math.isfinite(l_vt)):
            return 1.0, 1.0
        losses = torch.tensor([float(l_va), float(l_vt)], dtype=torch.float64)
        if bool((losses - self.min_losses + self.eps <= 0).any()):
            raise ConfigError(
                f"pretrain.balance.famo: losses ({l_va:.4g}, {l_vt:.4g}) are not above min_loss_va/min_loss_vt "
                f"({self.min_losses[0].item():.4g}, {self.min_losses[1].item():.4g}) (expected lower bounds of the losses)"
            )
        if self._prev is not None:
            self._update(self._log_d(self._prev) - self._log_d(losses))
        self._prev = losses
        with torch.no_grad():
            z = torch.softmax(self.xi, 0)
            d = losses - self.min_losses + self.eps
            c = (z / d).sum()
            m = self.k * z / (c * d)
        return float(m[0]), float(m[1])

    def _update(self, delta: torch.Tensor) -> None:
        """One Adam step of the logits along ``J_softmax(xi)^T delta``."""
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(torch.softmax(self.xi, 0), self.xi, grad_outputs=delta)
        self._opt.zero_grad(set_to_none=True)
        self.xi.grad = grad
        self._opt.step()
        self.xi.grad = None

    @property
    def logits(self) -> torch.Tensor:
        return self.xi.detach().clone()

    def state_dict(self) -> dict[str, Any]:
        """The logits, Adam's moments and step count, and the previous losses (empty list before the first step)."""
        adam = self._opt.state.get(self.xi, {})
        return {
            "xi": self.xi.detach().clone(),
            "adam": {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in adam.items()},
            "prev": [] if self._prev is None else [float(v) for v in self._prev],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        with torch.no_grad():
            self.xi.copy_(torch.as_tensor(state["xi"], dtype=torch.float64))
        adam = {k: v.clone() if torch.is_tensor(v) else v for k, v in dict(state.get("adam") or {}).items()}
        groups = self._opt.state_dict()["param_groups"]  # this run's lr and decay (the config's)
        self._opt.load_state_dict({"state": {0: adam} if adam else {}, "param_groups": groups})
        prev = list(state.get("prev") or [])
        self._prev = torch.tensor(prev, dtype=torch.float64) if prev else None
