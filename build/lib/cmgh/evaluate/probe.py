"""Linear probes on frozen features: full-batch, deterministic, L2 grid selected on a validation split.

Both probes are fitted in float64 with L-BFGS (scipy's L-BFGS-B, analytic gradients) from a zero start, so a
fit is a deterministic function of (features, labels, weight decay): no learning rate, no
mini-batch order, no seed. The objective is the mean loss plus ``weight_decay / 2 * ||W||^2``
(the bias is not penalized).

* :func:`fit_softmax` - multinomial logistic regression (Kinetics).
* :func:`fit_multilabel` - one sigmoid per class, binary cross-entropy (AudioSet tagging).
* :func:`select` - fit every weight decay of a grid on train, score on val, keep the best
  (primary metric, ties broken by the lower validation loss, then by the larger weight decay).

Features are standardized with the training split's statistics (:class:`Standardizer`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from cmgh.errors import DataError

__all__ = ["LinearProbe", "ProbeSelection", "Standardizer", "fit_multilabel", "fit_softmax", "select"]


@dataclass
class Standardizer:
    """Per-dimension z-scoring with the training split's mean and std (constant dims keep std 1)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            raise DataError(f"features: expected a non-empty [N, D] matrix, got shape {list(x.shape)}")
        mean = x.mean(0)
        std = x.std(0)
        std = np.where(std > 1e-8 * max(1.0, float(np.abs(mean).max(initial=0.0))), std, 1.0)
        return cls(mean, std)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.std


@dataclass
class LinearProbe:
    """``logits = x @ weight.T + bias`` (``kind``: ``softmax`` or ``multilabel``)."""

    weight: Tensor  # [C, D] float64
    bias: Tensor  # [C]
    weight_decay: float
    kind: str
    train_loss: float = math.nan
    iterations: int = 0

    def logits(self, x: np.ndarray | Tensor) -> np.ndarray:
        return np.array(x, dtype=np.float64) @ self.weight.numpy().T + self.bias.numpy()

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """Mean data loss (no penalty): cross-entropy or per-label BCE."""
        logits = torch.from_numpy(self.logits(x))
        return float(_data_loss(self.kind, logits, torch.from_numpy(_targets(self.kind, y))))


def _targets(kind: str, y: np.ndarray | Tensor) -> np.ndarray:
    t = np.array(y)
    return t.astype(np.int64) if kind == "softmax" else t.astype(np.float64)


def _data_loss(kind: str, logits: Tensor, targets: Tensor) -> Tensor:
    if kind == "softmax":
        return F.cross_entropy(logits, targets)
    return F.binary_cross_entropy_with_logits(logits, targets)


def _objective(kind: str, x: np.ndarray, targets: np.ndarray, num_outputs: int, wd: float) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """Loss and gradient of ``mean data loss + wd/2 ||W||^2`` over the flat ``[W (C*D), b (C)]`` (numpy, float64)."""
    n, d = x.shape
    if kind == "softmax":
        onehot = np.zeros((n, num_outputs))
        onehot[np.arange(n), targets] = 1.0
    else:
        onehot = targets

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = theta[: num_outputs * d].reshape(num_outputs, d)
        b = theta[num_outputs * d :]
        z = x @ w.T + b
        if kind == "softmax":
            z = z - z.max(1, keepdims=True)
            logsum = np.log(np.exp(z).sum(1, keepdims=True))
            logp = z - logsum
            loss = -(logp * onehot).sum() / n
            dz = (np.exp(logp) - onehot) / n
        else:
            # mean BCE over all N*C entries, in the stable softplus form
            loss = (np.logaddexp(0.0, z) - onehot * z).sum() / z.size
            dz = (0.5 * (1.0 + np.tanh(0.5 * z)) - onehot) / z.size
        loss += 0.5 * wd * float((w * w).sum())
        grad_w = dz.T @ x + wd * w
        return float(loss), np.concatenate([grad_w.ravel(), dz.sum(0)])

    return fun


def _fit(kind: str, x: np.ndarray, targets: np.ndarray, num_outputs: int, weight_decay: float, max_iter: int) -> LinearProbe:
    from scipy.optimize import minimize

    xa = np.array(x, dtype=np.float64)
    if xa.ndim != 2 or xa.shape[0] == 0:
        raise DataError(f"features: expected a non-empty [N, D] matrix, got shape {list(xa.shape)}")
    if targets.shape[0] != xa.shape[0]:
        raise DataError(f"labels: {targets.shape[0]} rows for {xa.shape[0]} feature rows")
    if not np.isfinite(xa).all():
        raise DataError("features: contain NaN or Inf (the encoder produced non-finite embeddings)")
    wd = float(weight_decay)
    d = xa.shape[1]
    fun = _objective(kind, xa, targets, num_outputs, wd)
    res = minimize(
        fun, np.zeros(num_outputs * (d + 1)), jac=True, method="L-BFGS-B",
        options={"maxiter": int(max_iter), "gtol": 1e-8, "ftol": 1e-12, "maxcor": 20},
    )
    theta = res.x
    w = torch.from_numpy(theta[: num_outputs * d].reshape(num_outputs, d).copy())
    b = torch.from_numpy(theta[num_outputs * d :].copy())
    probe = LinearProbe(w, b, wd, kind, math.nan, int(res.nit))
    probe.train_loss = probe.loss(xa, targets)
    return probe


def fit_softmax(x: np.ndarray, y: np.ndarray, num_classes: int, weight_decay: float, max_iter: int = 200) -> LinearProbe:
    """Multinomial logistic regression; ``y`` integer class indices in ``[0, num_classes)``."""
    labels = np.asarray(y)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"labels: class indices must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    return _fit("softmax", x, _targets("softmax", labels), num_classes, weight_decay, max_iter)


def fit_multilabel(x: np.ndarray, y: np.ndarray, weight_decay: float, max_iter: int = 200) -> LinearProbe:
    """One logistic regression per class; ``y`` multi-hot ``[N, C]`` (0/1)."""
    targets = _targets("multilabel", y)
    if targets.ndim != 2:
        raise DataError(f"labels: expected a multi-hot [N, C] matrix, got shape {list(targets.shape)}")
    return _fit("multilabel", x, targets, targets.shape[1], weight_decay, max_iter)


@dataclass
class ProbeSelection:
    """The chosen probe and the validation score of every grid point."""

    probe: LinearProbe
    weight_decay: float
    val_score: float
    grid: list[dict[str, float]] = field(default_factory=list)


def select(
    fit: Callable[[float], LinearProbe],
    weight_decays: Sequence[float],
    x_val: np.ndarray,
    y_val: np.ndarray,
    score: Callable[[np.ndarray, np.ndarray], float],
) -> ProbeSelection:
    """Fit one probe per weight decay; keep the best ``score(val_logits, y_val)`` (higher is better).

    Ties (frequent on small validation splits) go to the lower validation loss, then to the
    larger weight decay (the simpler model). A NaN score ranks below every number.
    """
    if not weight_decays:
        raise DataError("weight decay grid is empty")
    best: tuple[Any, ...] | None = None
    grid = []
    for wd in weight_decays:
        probe = fit(float(wd))
        logits = probe.logits(x_val)
        value = float(score(logits, y_val))
        val_loss = probe.loss(x_val, y_val)
        grid.append({"weight_decay": float(wd), "val_score": value, "val_loss": val_loss, "train_loss": probe.train_loss})
        key = (-math.inf if math.isnan(value) else value, -val_loss if math.isfinite(val_loss) else -math.inf, float(wd))
        if best is None or key > best[0]:
            best = (key, probe, value)
    assert best is not None
    return ProbeSelection(best[1], best[1].weight_decay, best[2], grid)
