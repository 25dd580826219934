"""VATT's contrastive objectives, per sample (VATT Sec. 3.3 "Multimodal contrastive learning";
MIL-NCE: Miech et al., CVPR 2020, Sec. 3 / Eq. 1).

    L = L_va + lambda * L_vt        (VATT's overall objective, Sec. 3.3; the sum CMGH harmonizes)

``L_va`` is NCE between the video and audio embeddings in the video-audio space, ``L_vt`` is
MIL-NCE between the video embedding and the candidate captions in the video-audio-text space.
Both return **one value per sample** because CMGH needs per-sample gradients and a per-sample
curriculum (our reconstruction from the paper's abstract); :func:`objective` turns them into the two scalar terms.

Both losses couple the samples through the batch softmax (the other samples are the negatives),
so the gradient of ``sum_j l_j`` with respect to sample ``i``'s embedding contains every other
sample's loss as well; see :mod:`cmgh.harmonize.gradients` for what that means for per-sample
gradients.

Masked entries use a large finite negative logit (not ``-inf``) so that rows with nothing to
compare give finite values and zero gradients instead of NaNs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

_MASKED = -1.0e9


def _normalize(z: Tensor) -> Tensor:
    return F.normalize(z.float(), dim=-1, eps=1e-12)


def nce(z_a: Tensor, z_b: Tensor, temperature: float, valid: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE (VATT Sec. 3.3, the video-audio NCE) per sample: ``[B]``.

    ``l_i = 1/2 [ -log softmax_j(s_ij)_i  - log softmax_j(s_ji)_i ]`` with
    ``s_ij = <a_i, b_j> / temperature`` on L2-normalised embeddings: the matching pair
    ``(a_i, b_i)`` is the positive, every non-matching pair in the batch a negative, in both
    directions (a->b and b->a), averaged. Rows with ``valid[i] = False`` neither count as
    negatives nor get a loss (their value is 0).
    """
    a, b = _normalize(z_a), _normalize(z_b)
    logits = a @ b.T / temperature
    pos = logits.diagonal()
    if valid is not None:
        col_ok = valid[None, :] & valid[:, None]
        logits = logits.masked_fill(~col_ok, _MASKED)
    l_ab = torch.logsumexp(logits, dim=1) - pos
    l_ba = torch.logsumexp(logits, dim=0) - pos
    loss = 0.5 * (l_ab + l_ba)
    if valid is not None:
        loss = torch.where(valid, loss, torch.zeros_like(loss))
    return loss


def text_valid(text_mask: Tensor, has_text: Tensor | None = None) -> Tensor:
    """Rows that take part in MIL-NCE: they have text and at least one candidate caption."""
    ok = text_mask.any(dim=-1)
    return ok if has_text is None else ok & has_text


def mil_nce(
    z_video: Tensor, z_text: Tensor, text_mask: Tensor, temperature: float, valid: Tensor | None = None
) -> Tensor:
    """MIL-NCE (Miech et al. 2020, Eq. 1; VATT Sec. 3.3, the video-text loss) per sample: ``[B]``.

    ``l_i = -log( sum_{p in P_i} e^{s(v_i,t_p)} / (sum_{p in P_i} e^{s(v_i,t_p)} + sum_{(v',t') in N_i} e^{s(v',t')}) )``

    with ``s = <v, t> / temperature`` on L2-normalised embeddings. ``P_i`` are sample ``i``'s
    valid candidates (``text_mask[i]``: the captions nearest in time). As in Miech et al.'s
    reference implementation, the denominator is the log-sum-exp over video ``i`` against every
    caption of the batch *and* every video of the batch against ``i``'s captions (so the
    positives appear in both halves). Only rows with ``valid`` (default: any candidate) take
    part: their captions and videos are the only negatives, and other rows get 0.

    Args:
        z_video: ``[B, E]``. z_text: ``[B, K, E]``. text_mask: ``[B, K]`` bool.
        valid: ``[B]`` bool, e.g. ``has_text``; combined with ``text_mask.any(-1)``.
    """
    ok = text_valid(text_mask, valid)
    v, t = _normalize(z_video), _normalize(z_text)
    b, k, _ = t.shape
    sim = torch.einsum("ie,jke->ijk", v, t) / temperature  # [B(video), B(text owner), K]
    cand = text_mask & ok[:, None]  # [B, K]
    sim = sim.masked_fill(~cand[None, :, :] | ~ok[:, None, None], _MASKED)
    eye = torch.eye(b, dtype=torch.bool, device=sim.device)
    pos = sim[eye]  # [B, K]: sim[i, i, :]
    numerator = torch.logsumexp(pos, dim=1)
    denominator = torch.logsumexp(torch.cat([sim, sim.transpose(0, 1)], dim=1).reshape(b, -1), dim=1)
    loss = denominator - numerator
    return torch.where(ok, loss, torch.zeros_like(loss))


def weighted_mean(values: Tensor, weights: Tensor | None = None) -> Tensor:
    """``sum w v / sum w`` (0 when every weight is 0); ``weights=None`` is the plain mean."""
    if weights is None:
        return values.mean()
    weights = weights.to(values.dtype)
    denom = weights.sum()
    return torch.where(denom > 0, (weights * values).sum() / denom.clamp_min(1e-12), values.new_zeros(()))


class Objective(NamedTuple):
    """``total = va + vt_weight * vt`` (VATT Sec. 3.3) and its two terms (``vt`` without lambda)."""

    total: Tensor
    va: Tensor
    vt: Tensor


def objective(
    l_va: Tensor,
    l_vt: Tensor,
    valid_vt: Tensor,
    vt_weight: float,
    w_va: Tensor | None = None,
    w_vt: Tensor | None = None,
    valid_va: Tensor | None = None,
) -> Objective:
    """Reduce the per-sample losses: ``L_va`` averages over rows with audio (``valid_va``; None: every
    row), ``L_vt`` over rows with text.

    Optional per-sample weights (the curriculum: our reconstruction of CMGH's) weight each row's term and the
    normaliser (a dropped row leaves the average). Dropped rows still serve as negatives of the
    others: the weights act on the anchors, the losses were computed on the whole batch.
    """
    if valid_va is not None:  # a clip without an audio stream leaves the video-audio term, as one without text leaves L_vt
        w_va = valid_va.to(l_va.dtype) if w_va is None else w_va.to(l_va.dtype) * valid_va.to(l_va.dtype)
    va = weighted_mean(l_va, w_va)
    wt = valid_vt.to(l_vt.dtype) if w_vt is None else w_vt.to(l_vt.dtype) * valid_vt.to(l_vt.dtype)
    vt = weighted_mean(l_vt, wt)
    return Objective(va + vt_weight * vt, va, vt)
