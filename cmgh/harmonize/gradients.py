"""Per-sample gradients of the two objectives where they meet: at the representation, the tail parameters, or their seeds for all parameters.

The two objectives of VATT meet at the shared video representation ``video_rep [B,D]``: the
video-audio head and the video-text head both read it. CMGH (as we reconstruct it from the abstract) compares, per triplet,
the gradient of ``L_va`` and the gradient of ``L_vt``; this module computes those gradients,
:mod:`cmgh.harmonize.harmonizer` combines them and runs the backward pass.

**Meeting point "representation" (default, cheap).** The trainer cuts the graph at
``video_rep``: the heads read a detached leaf ``meet`` (:func:`detach_meeting_point`), so
``torch.autograd.grad(J, meet)`` runs through the small heads and the loss only, never the
backbone. What that gives, exactly:

* ``per_sample_gradients(..., exact=False)`` ("cheap") returns row ``i`` of
  ``d(sum_j c_j l_j) / d video_rep``, i.e. ``sum_j c_j dl_j/d rep_i``: the gradient the backbone
  would receive for sample ``i`` from that objective. Because NCE and MIL-NCE couple the batch
  through the softmax denominators, this includes the contributions of *other* samples' losses
  in which sample ``i`` is a negative. For a per-sample-separable loss it is exactly
  ``c_i dl_i/d rep_i``.
* ``exact=True`` (config ``pretrain.harmonize.per_sample: own``) returns ``c_i dl_i/d rep_i`` (sample ``i``'s own loss only, the other samples'
  embeddings held fixed), the diagonal of the ``[B,B,D]`` Jacobian, computed with one batched
  vector-Jacobian product (``is_grads_batched``) through the heads: ``B`` times the head cost,
  still no backbone pass. It is what "the gradient of triplet ``i``'s loss" means literally,
  but it is *not* what the backbone receives, so the combined gradient built from it no
  longer sums to the plain gradient under the rule ``none``; the cheap one does, which is why
  it is the default.

**Meeting point "parameters".** Our reading of CMGH puts the conflict over the shared parameters'
gradients. :func:`parameter_gradients` computes per-sample gradients of each objective over the
last ``parameter_blocks`` blocks of the video pathway (with :mod:`torch.func`: ``vmap(grad(...))``
over ``functional_call`` of the tail blocks on each sample's hidden state), as
``J_i^T g_i`` with ``J_i = d rep_i / d theta``: sample ``i``'s share of the parameter gradient
through its video representation (these sum over ``i`` to the tail blocks' gradient through
``video_rep``). In the ``ma`` backbone those blocks also serve audio and text; their
contributions through the audio and text pathways are not included (the video pathway is what
both objectives share in both backbones). The tail is re-run with explicit softmax attention
(``vmap`` has no batching rule for the fused CPU kernel); with ``model.dropout > 0`` its dropout
masks are redrawn, so the cosine is then that of a slightly different sub-network (exact in
eval mode or with dropout 0, the default).

**Meeting point "all_parameters".** The per-sample gradients over *every* shared parameter,
``sum`` over sample ``i``'s paths into the shared pathway (in ``ma`` the audio and text sequences'
too), never materialised: :func:`leaf_gradients` gives each objective's cheap gradients at every
detached representation, which seed the cotangent passes of :mod:`cmgh.harmonize.ghost`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn


def detach_meeting_point(reps: Mapping[str, Tensor], key: str = "video_rep") -> tuple[dict[str, Tensor], Tensor]:
    """Cut the graph at the shared representation: ``(reps with a detached leaf at key, the attached tensor)``.

    Apply the heads to the returned dict; pass both the leaf (``reps[key]``) and the attached
    tensor to :func:`harmonized_backward`.
    """
    attached = reps[key]
    out = dict(reps)
    out[key] = attached.detach().requires_grad_(True)
    return out, attached


def with_objective(term: Tensor, outputs: Sequence[Tensor], seeds: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """``outputs`` and their ``seeds`` for one backward, with ``term`` (seeded by 1) first when it is still in the graph
    (a balancer's multiplier of 0 leaves an objective out of it)."""
    if term.requires_grad:
        return [term, *outputs], [torch.ones_like(term), *seeds]
    return list(outputs), list(seeds)


def objective_cotangents(
    valid_vt: Tensor,
    vt_weight: float,
    w_va: Tensor | None = None,
    w_vt: Tensor | None = None,
    batch_size: int | None = None,
    valid_va: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``(c_va, c_vt) [B]`` with ``J_total = sum c_va l_va + sum c_vt l_vt`` (as :func:`cmgh.losses.objective`).

    ``c_va = w_va valid_va / sum(w_va valid_va)`` and ``c_vt = lambda w_vt valid / sum(w_vt valid)``
    (``valid_va`` None: every row has audio).
    """
    b = batch_size or valid_vt.shape[0]
    one = torch.ones(b, device=valid_vt.device)
    wa = one if w_va is None else w_va.float()
    if valid_va is not None:
        wa = wa * valid_va.float()
    wt = (one if w_vt is None else w_vt.float()) * valid_vt.float()
    c_va = wa / wa.sum().clamp_min(1e-12) if bool(wa.sum() > 0) else torch.zeros_like(wa)
    c_vt = vt_weight * wt / wt.sum().clamp_min(1e-12) if bool(wt.sum() > 0) else torch.zeros_like(wt)
    return c_va, c_vt


def per_sample_gradients(
    l_va: Tensor,
    l_vt: Tensor,
    meet: Tensor,
    c_va: Tensor | None = None,
    c_vt: Tensor | None = None,
    *,
    exact: bool = False,
) -> tuple[Tensor, Tensor]:
    """Per-sample gradients ``g_va, g_vt [B,D]`` of ``sum_j c_j l_j`` at ``meet`` (graph retained).

    ``exact=False``: row ``i`` of ``d(sum_j c_j l_j)/d meet`` (includes other samples' losses
    through the negatives: the gradient the backbone receives for sample ``i``).
    ``exact=True``: ``c_i d l_i / d meet_i`` only (the Jacobian's diagonal). See the module
    docstring.
    """
    c_va = torch.ones_like(l_va) if c_va is None else c_va.to(l_va.dtype)
    c_vt = torch.ones_like(l_vt) if c_vt is None else c_vt.to(l_vt.dtype)
    out = []
    for loss, c in ((l_va, c_va), (l_vt, c_vt)):
        if not loss.requires_grad:
            out.append(torch.zeros_like(meet))
            continue
        if exact:
            eye = torch.diag(c)
            (jac,) = torch.autograd.grad(
                loss, meet, grad_outputs=eye, retain_graph=True, is_grads_batched=True, allow_unused=True
            )
            g = torch.zeros_like(meet) if jac is None else jac.diagonal(dim1=0, dim2=1).T
        else:
            (g,) = torch.autograd.grad(loss, meet, grad_outputs=c, retain_graph=True, allow_unused=True)
            g = torch.zeros_like(meet) if g is None else g
        out.append(g)
    return out[0], out[1]


def leaf_gradients(
    l_va: Tensor, l_vt: Tensor, leaves: Mapping[str, Tensor], c_va: Tensor, c_vt: Tensor, *, exact: bool = False
) -> dict[str, dict[str, Tensor | None]]:
    """Per objective, the gradient of ``sum_j c_j l_j`` at each detached representation leaf (graph retained).

    ``{"va": {key: [B,...] or None}, "vt": {...}}``, ``None`` where the objective does not read
    that leaf. At ``video_rep`` these are :func:`per_sample_gradients`' gradients (cheap, or with
    ``exact`` each row's own ``c_i dl_i/d leaf_i``); the ``all_parameters`` meeting point seeds
    its cotangent passes with them (:mod:`cmgh.harmonize.ghost`).
    """
    keys = list(leaves)
    out: dict[str, dict[str, Tensor | None]] = {}
    for name, loss, c in (("va", l_va, c_va), ("vt", l_vt, c_vt)):
        if not loss.requires_grad:
            out[name] = dict.fromkeys(keys)
            continue
        targets = [leaves[k] for k in keys]
        if exact:  # the Jacobian's diagonal: row i of sample i's own loss
            jacs = torch.autograd.grad(
                loss, targets, grad_outputs=torch.diag(c.to(loss.dtype)), retain_graph=True, is_grads_batched=True, allow_unused=True
            )
            grads = tuple(None if j is None else j.diagonal(dim1=0, dim2=1).movedim(-1, 0) for j in jacs)
        else:
            grads = torch.autograd.grad(loss, targets, grad_outputs=c.to(loss.dtype), retain_graph=True, allow_unused=True)
        out[name] = dict(zip(keys, grads, strict=True))
    return out


def parameter_gradients(
    tail: nn.Module, hidden: Tensor, cotangents: Sequence[Tensor], key_mask: Tensor | None = None
) -> list[Tensor]:
    """Per-sample parameter gradients ``[B,P]`` of the tail blocks, one per representation cotangent.

    For cotangent ``g [B,D]`` (a per-sample gradient at ``video_rep``), row ``i`` is
    ``J_i^T g_i``, ``J_i = d tail(hidden_i) / d theta``: computed with ``torch.func.vmap`` of
    ``torch.func.grad`` over ``functional_call(tail, theta, hidden_i)``. Summed over ``i`` it
    equals the gradient ``theta`` receives from ``video_rep`` with cotangent ``g``.
    """
    from torch.func import functional_call, grad, vmap

    params = {name: p.detach() for name, p in tail.named_parameters()}
    h = hidden.detach()

    def contracted(theta: dict[str, Tensor], h_i: Tensor, g_i: Tensor, m_i: Tensor | None) -> Tensor:
        mask = None if m_i is None else m_i[None]
        rep = functional_call(tail, theta, (h_i[None], mask))[0]
        return (rep * g_i.detach()).sum()

    n = len(cotangents)
    hs = h.repeat(n, *([1] * (h.dim() - 1)))
    gs = torch.cat([g.detach() for g in cotangents])
    ms = None if key_mask is None else key_mask.repeat(n, 1)
    in_dims = (None, 0, 0, None if ms is None else 0)
    fused = [(m, m.fused) for m in tail.modules() if hasattr(m, "fused")]
    try:
        for m, _ in fused:
            m.fused = False  # explicit attention: vmap has no batching rule for the fused CPU kernel
        grads = vmap(grad(contracted), in_dims=in_dims, randomness="different")(params, hs, gs, ms)
    finally:
        for m, flag in fused:
            m.fused = flag
    flat = torch.cat([grads[name].reshape(hs.shape[0], -1) for name in params], dim=1)
    return list(flat.chunk(n, dim=0))
