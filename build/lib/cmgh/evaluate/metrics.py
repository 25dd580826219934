"""Downstream metrics on plain arrays: top-k accuracy, mAP / AUC / d-prime, retrieval ranks, noise-detection curves.

Inputs may be numpy arrays or torch tensors (any device); everything is computed in torch and
returned as Python floats / dicts (curves as numpy arrays) so results go straight into JSON.

Conventions, chosen so that a degenerate scorer can never look good:

* **Ties are pessimistic** for ranks, top-k and average precision: an item tied with the one being
  ranked counts as ranked *above* it. A constant scorer therefore gets the worst rank, not an
  arbitrary one that depends on the sort order.
* **ROC AUC is the exception**: it follows the standard Mann-Whitney convention (a tied
  positive/negative pair counts 0.5), so numbers are comparable with published AUC / d-prime and
  with scikit-learn. A constant scorer gets AUC 0.5 there, which is already "no skill".
* **Undefined metrics are NaN**, never an exception (e.g. no class has a positive, empty input),
  so one degenerate split does not crash an evaluation run. Malformed inputs (shape mismatches,
  non-binary targets, NaN scores) raise :class:`cmgh.errors.DataError` with a one-line message.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cmgh.errors import DataError

__all__ = [
    "average_precision",
    "binary_auroc",
    "concept_retrieval_metrics",
    "d_prime",
    "mean_auc",
    "mean_average_precision",
    "retrieval_metrics",
    "roc_curve",
    "topk_accuracy",
]

_NAN = float("nan")
# Rows of the similarity matrix compared at once: keeps the boolean temporary ~a few MB (cache
# friendly) while leaving enough work per call to amortise the dispatch overhead.
_RETRIEVAL_CHUNK_ROWS = 128


# --------------------------------------------------------------------------- input checking


def _tensor(x: Any, name: str) -> Tensor:
    """Torch view of ``x`` (no copy for numpy/CPU tensors); anything else is a DataError."""
    if isinstance(x, Tensor):
        return x.detach()
    try:
        array = np.asarray(x)
        return torch.as_tensor(array if array.flags.writeable else array.copy())  # read-only views (pandas) are copied
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{name}: cannot convert {type(x).__name__} to a tensor ({exc})") from None


def _shape(t: Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def _scores(x: Any, name: str, ndim: int) -> Tensor:
    """Float64 scores with ``ndim`` dims and no NaN (a NaN score has no place in a ranking)."""
    t = _tensor(x, name)
    if t.dim() != ndim:
        raise DataError(f"{name}: expected {ndim}-D scores, got shape {_shape(t)}")
    t = t.to(torch.float64)
    if torch.isnan(t).any():
        raise DataError(f"{name}: contains NaN scores")
    return t


def _binary(x: Any, name: str, like: Tensor, like_name: str) -> Tensor:
    """Boolean targets with the same shape as ``like``; values must be 0/1 (or bool)."""
    t = _tensor(x, name)
    if t.shape != like.shape:
        raise DataError(f"{name}: shape {_shape(t)} does not match {like_name} shape {_shape(like)}")
    if t.dtype != torch.bool:
        if not ((t == 0) | (t == 1)).all():
            raise DataError(f"{name}: targets must be 0/1, got other values")
        t = t != 0
    return t


# --------------------------------------------------------------------------- ranking cores


def _ap_per_row(scores: Tensor, targets: Tensor) -> Tensor:
    """Pessimistic-tie average precision of every row of ``scores`` [R, N]; NaN for rows without positives.

    For an item with score ``s``: ``ge_all`` = #items with score >= s, ``ge_pos`` = #positives with
    score >= s, found by binary search in the ascending row (suffix sums of the sorted targets), so
    ties cost nothing extra and no Python loop over rows or items is needed.
    """
    n = scores.shape[1]
    asc, order = torch.sort(scores, dim=1)
    tgt_sorted = torch.gather(targets.to(torch.float64), 1, order)
    # suffix[j] = positives at sorted positions >= j; suffix[n] = 0.
    suffix = torch.cat(
        [torch.flip(torch.cumsum(torch.flip(tgt_sorted, [1]), 1), [1]), tgt_sorted.new_zeros(scores.shape[0], 1)], 1
    )
    first_ge = torch.searchsorted(asc.contiguous(), scores.contiguous(), side="left")
    ge_all = (n - first_ge).to(torch.float64)
    ge_pos = torch.gather(suffix, 1, first_ge)
    tgt = targets.to(torch.float64)
    n_pos = tgt.sum(1)
    precision_sum = (ge_pos / ge_all.clamp_min(1) * tgt).sum(1)
    return torch.where(n_pos > 0, precision_sum / n_pos.clamp_min(1), torch.full_like(n_pos, _NAN))


def _auc_per_row(scores: Tensor, targets: Tensor) -> Tensor:
    """Mann-Whitney ROC AUC of every row [R, N] (ties 0.5); NaN for rows lacking a positive or a negative.

    AUC = (sum of the positives' mid-ranks - P(P+1)/2) / (P * Nn), mid-ranks from two binary searches.
    """
    asc, _ = torch.sort(scores, dim=1)
    asc = asc.contiguous()
    s = scores.contiguous()
    below = torch.searchsorted(asc, s, side="left").to(torch.float64)
    upto = torch.searchsorted(asc, s, side="right").to(torch.float64)
    mid_rank = (below + upto + 1.0) / 2.0  # 1-based average rank of the tie group
    tgt = targets.to(torch.float64)
    n_pos = tgt.sum(1)
    n_neg = scores.shape[1] - n_pos
    u = (mid_rank * tgt).sum(1) - n_pos * (n_pos + 1) / 2
    defined = (n_pos > 0) & (n_neg > 0)
    return torch.where(defined, u / (n_pos * n_neg).clamp_min(1), torch.full_like(n_pos, _NAN))


def _nanmean(values: Tensor) -> float:
    """Mean over the defined (non-NaN) entries; NaN if none is defined."""
    ok = ~torch.isnan(values)
    return float(values[ok].mean()) if bool(ok.any()) else _NAN


# --------------------------------------------------------------------------- classification


def topk_accuracy(logits: Any, labels: Any, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy in percent, keyed ``top{k}`` for each requested ``k``.

    ``k`` larger than the number of classes is clipped (top-k over 3 classes with k=5 is top-3),
    so a small eval split does not need a different ``ks``. Ties are pessimistic: a wrong class
    scoring exactly the true class's score counts as ranked above it, so a constant model scores
    0 rather than 100. Empty input gives NaN.
    """
    x = _scores(logits, "logits", 2)
    y = _tensor(labels, "labels")
    n, c = x.shape
    if y.shape != (n,):
        raise DataError(f"labels: shape {_shape(y)} does not match logits shape {_shape(x)} (expected [{n}])")
    if y.is_floating_point() and not bool((y == y.round()).all()):
        raise DataError("labels: class indices must be integers")
    y = y.to(device=x.device, dtype=torch.long)
    if n and (int(y.min()) < 0 or int(y.max()) >= c):
        raise DataError(f"labels: class indices must lie in [0, {c}), got [{int(y.min())}, {int(y.max())}]")
    for k in ks:
        if int(k) < 1:
            raise ValueError(f"ks: every k must be >= 1, got {k}")
    if n == 0:
        return {f"top{k}": _NAN for k in ks}
    true_score = x.gather(1, y[:, None])
    rank = (x >= true_score).sum(1)  # 1-based, includes the true class itself
    return {f"top{k}": float((rank <= min(int(k), c)).to(torch.float64).mean() * 100.0) for k in ks}


def mean_average_precision(scores: Any, targets: Any) -> float:
    """Macro mAP (AudioSet-style) as a fraction in [0, 1].

    AP of a class = mean over its positives of the precision at that positive's rank, where the
    rank counts every item with score >= the positive's score (ties pessimistic). Classes with no
    positive are skipped (their AP is undefined); NaN if no class has a positive.
    """
    s = _scores(scores, "scores", 2)
    t = _binary(targets, "targets", s, "scores").to(s.device)
    if s.shape[0] == 0:
        return _NAN
    return _nanmean(_ap_per_row(s.T, t.T))


def mean_auc(scores: Any, targets: Any) -> float:
    """Macro ROC AUC over classes having at least one positive and one negative; NaN if none does.

    Ties follow the standard AUC convention (a tied positive/negative pair counts 0.5, i.e. the
    Mann-Whitney U statistic), *not* the pessimistic rule of the rank metrics, so values match
    published AUC / d-prime and scikit-learn's ``roc_auc_score``.
    """
    s = _scores(scores, "scores", 2)
    t = _binary(targets, "targets", s, "scores").to(s.device)
    if s.shape[0] == 0:
        return _NAN
    return _nanmean(_auc_per_row(s.T, t.T))


def d_prime(auc: float) -> float:
    """d' = sqrt(2) * Phi^-1(AUC), the AudioSet papers' AUC re-expressed as a detector separation.

    It is the distance between unit-variance Gaussian score distributions giving that AUC, which
    spreads out the near-1 AUCs where models differ. AUC 1 gives +inf, 0 gives -inf, NaN stays NaN.
    """
    return float(math.sqrt(2.0) * torch.special.ndtri(torch.tensor(float(auc), dtype=torch.float64)))


# --------------------------------------------------------------------------- retrieval


def retrieval_metrics(sim: Any) -> dict[str, float]:
    """R@1/5/10 (percent), median and mean rank (1-based) of each query's match.

    ``sim[i, j]`` scores query ``i`` against item ``j``; item ``i`` is query ``i``'s match, so
    ``Q <= N``. Ties are pessimistic: rank = 1 + #other items scoring >= the match. The rank is a
    per-row count of ``sim >= diag``, done in row chunks: one linear pass over the matrix, far
    cheaper than sorting every row and with bounded extra memory. ``MedR`` is the ordinary median
    (mean of the two middle ranks for an even number of queries). NaN everywhere if ``Q == 0``.
    """
    s = _tensor(sim, "sim")
    if s.dim() != 2:
        raise DataError(f"sim: expected a 2-D [queries, items] matrix, got shape {_shape(s)}")
    q, n = s.shape
    if q > n:
        raise DataError(f"sim: shape {_shape(s)} has more queries than items (query i's match is item i)")
    if q == 0:
        return {"R@1": _NAN, "R@5": _NAN, "R@10": _NAN, "MedR": _NAN, "MnR": _NAN}
    if not s.is_floating_point():
        s = s.to(torch.float64)
    # NaN screen in one cheap reduction: a row holding a NaN sums to NaN (so may +inf + -inf, hence
    # the exact re-check on the flagged rows only). An elementwise isnan pass would cost more than
    # the ranking itself.
    suspect = torch.isnan(s.sum(dim=1)).nonzero().flatten()
    if suspect.numel():
        bad = suspect[torch.isnan(s[suspect]).any(dim=1)]
        if bad.numel():
            raise DataError(f"sim: contains NaN scores (first in row {int(bad[0])})")
    diag = s.diagonal()[:, None]
    ranks = torch.empty(q, dtype=torch.long, device=s.device)
    for start in range(0, q, _RETRIEVAL_CHUNK_ROWS):
        stop = min(start + _RETRIEVAL_CHUNK_ROWS, q)
        torch.sum(s[start:stop] >= diag[start:stop], dim=1, out=ranks[start:stop])
    r = ranks.to(torch.float64)
    return {
        "R@1": float((r <= 1).to(torch.float64).mean() * 100.0),
        "R@5": float((r <= 5).to(torch.float64).mean() * 100.0),
        "R@10": float((r <= 10).to(torch.float64).mean() * 100.0),
        "MedR": float(np.median(r.cpu().numpy())),
        "MnR": float(r.mean()),
    }


def concept_retrieval_metrics(sim: Any, query_groups: Sequence[Any], item_groups: Sequence[Any], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Concept-level retrieval: every item of the query's group (concept, category) is relevant.

    ``concept_mAP`` (a fraction): the mean over queries of the average precision of the relevant
    items; ``concept_R@k`` (percent): the share of queries with at least one relevant item in the
    top ``k``. Where queries name only a concept, the instance-level metrics of
    :func:`retrieval_metrics` rank the right item among its group's ties; these do not. Ties are
    pessimistic against the irrelevant items only (an irrelevant item tied with a relevant one ranks
    above it; relevant items tied among themselves cost nothing), as in
    :func:`mean_average_precision`. A query with no relevant item is left out; NaN if none has one.
    """
    s = _scores(sim, "sim", 2)
    q, n = s.shape
    query_groups, item_groups = np.asarray(query_groups), np.asarray(item_groups)
    if query_groups.shape != (q,) or item_groups.shape != (n,):
        raise DataError(f"groups: expected {q} query and {n} item groups (sim {_shape(s)}), got shapes "
                        f"{list(query_groups.shape)} and {list(item_groups.shape)}")
    relevant = torch.as_tensor(query_groups[:, None] == item_groups[None, :], device=s.device).reshape(q, n)
    names = ["concept_mAP", *(f"concept_R@{int(k)}" for k in ks)]
    if q == 0:
        return dict.fromkeys(names, _NAN)
    best = torch.where(relevant, s, torch.full_like(s, -math.inf)).max(dim=1, keepdim=True).values
    first = 1 + ((s >= best) & ~relevant).sum(dim=1).to(torch.float64)  # rank of the best-ranked relevant item
    defined = relevant.any(dim=1)
    first = torch.where(defined, first, torch.full_like(first, _NAN))
    result = {"concept_mAP": _nanmean(_ap_per_row(s, relevant))}
    for k in ks:
        hit = (first <= int(k)).to(torch.float64) * 100.0
        result[f"concept_R@{int(k)}"] = _nanmean(torch.where(defined, hit, first))
    return result


# --------------------------------------------------------------------------- noise detection (binary)


def _binary_inputs(scores: Any, labels: Any) -> tuple[Tensor, Tensor]:
    s = _scores(scores, "scores", 1)
    return s, _binary(labels, "labels", s, "scores").to(s.device)


def binary_auroc(scores: Any, labels: Any) -> float:
    """ROC AUC of a binary detector (higher score = more likely positive); ties 0.5, as in :func:`mean_auc`.

    NaN unless both a positive and a negative are present.
    """
    s, y = _binary_inputs(scores, labels)
    if s.numel() == 0:
        return _NAN
    return float(_auc_per_row(s[None], y[None])[0])


def average_precision(scores: Any, labels: Any) -> float:
    """Average precision of a binary detector, ties pessimistic as in :func:`mean_average_precision`.

    With pessimistic ties this equals the step-wise ``sum_k (R_k - R_{k-1}) P_k`` over distinct
    thresholds (scikit-learn's definition). NaN if there is no positive.
    """
    s, y = _binary_inputs(scores, labels)
    if s.numel() == 0:
        return _NAN
    return float(_ap_per_row(s[None], y[None])[0])


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)`` as float64 numpy arrays (ready for plotting / JSON).

    One point per distinct score, thresholds descending, predicting positive when
    ``score >= threshold``; a leading ``(0, 0)`` point with threshold ``+inf`` anchors the curve.
    ``fpr`` (``tpr``) is NaN throughout when there is no negative (positive): the rate is undefined.
    """
    s, y = _binary_inputs(scores, labels)
    desc, order = torch.sort(s, descending=True, stable=True)
    y_sorted = y[order].to(torch.float64)
    tp = torch.cumsum(y_sorted, 0)
    fp = torch.cumsum(1.0 - y_sorted, 0)
    # Last position of every tie group: all items with score >= threshold are predicted positive.
    last = torch.ones_like(desc, dtype=torch.bool)
    if desc.numel() > 1:
        last[:-1] = desc[1:] != desc[:-1]
    zero = s.new_zeros(1)
    tp = torch.cat([zero, tp[last]])
    fp = torch.cat([zero, fp[last]])
    thresholds = torch.cat([s.new_full((1,), math.inf), desc[last]])
    n_pos = float(y.sum())
    n_neg = float(y.numel()) - n_pos
    tpr = tp / n_pos if n_pos > 0 else torch.full_like(tp, _NAN)
    fpr = fp / n_neg if n_neg > 0 else torch.full_like(fp, _NAN)
    return fpr.cpu().numpy(), tpr.cpu().numpy(), thresholds.cpu().numpy()
