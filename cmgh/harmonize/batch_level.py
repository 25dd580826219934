"""Batch-level surgery: a rule applied once to the whole batch's two gradients (``harmonize.granularity: batch``).

PCGrad (Yu et al. 2020), CAGrad (Liu et al. 2021) and GradVac (Wang et al. 2021) were published
for task gradients of a whole batch, not per sample. Running our rules at that granularity tells
whether CMGH's *per-sample* realignment matters or only realignment does: same rule, same
coefficients of a 2x2 Gram, one pair of scalars for the batch instead of one per triplet.

Where the Gram comes from (``harmonize.meeting_point``):

* ``representation``: the Frobenius inner products of the two ``[B,D]`` gradient matrices at the
  video representation, i.e. the sums of the per-row Gram entries. Free: the rows are computed
  anyway. The combination ``alpha g_va + beta g_vt`` then enters the backbone's one backward.
* ``all_parameters``: the two objectives' gradients over every shared parameter, ``G_va`` and
  ``G_vt``, each from its own backward pass through the backbone (as PCGrad and CAGrad are
  implemented), then ``alpha G_va + beta G_vt`` is written into the shared parameters' ``.grad``.
  Two backbone backward passes instead of one, plus two copies of the shared gradients.

Under data parallelism the Gram is that of the global batch: the per-rank sums (or the per-rank
gradients) are averaged over ranks first. Every rule in the registry is scale-invariant in the
Gram, so averages serve as well as sums.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cmgh.harmonize.gradients import with_objective
from cmgh.harmonize.ranks import Collectives
from cmgh.harmonize.rules import Gram


def batch_gram(gram: Gram, ranks: Collectives) -> Gram:
    """The whole (global) batch's Gram at the representation from the per-row Gram: one row, ``[1]`` each."""
    sums = ranks.mean(torch.stack([gram.aa.sum(), gram.ab.sum(), gram.bb.sum()]).detach())
    return Gram(sums[0:1], sums[1:2], sums[2:3])


def objective_parameter_gradients(
    term: Tensor, video_rep: Tensor, g_meet: Tensor, shared: Sequence[nn.Parameter], ranks: Collectives
) -> list[Tensor]:
    """One objective's gradient over the shared parameters, averaged over ranks (graph retained).

    ``term`` is the objective's weighted sum through the heads (it reaches the shared pathway
    through the audio or text representation in ``ma``); ``g_meet`` its gradient at the detached
    video representation, fed into the video pathway.
    """
    outputs, seeds = with_objective(term, [video_rep], [g_meet.to(video_rep.dtype)])
    grads = torch.autograd.grad(outputs, list(shared), seeds, retain_graph=True, allow_unused=True)
    dense = [torch.zeros_like(p) if g is None else g for p, g in zip(shared, grads, strict=True)]
    if ranks.size == 1:
        return dense
    flat = ranks.mean(torch.cat([g.reshape(-1) for g in dense]))  # one collective for all of them
    return [part.view_as(g) for part, g in zip(flat.split([g.numel() for g in dense]), dense, strict=True)]


def parameter_gram(g_va: Sequence[Tensor], g_vt: Sequence[Tensor]) -> Gram:
    """The 2x2 Gram of two gradients given as per-parameter lists: one row, ``[1]`` each."""

    def dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
        return torch.stack([(x.float() * y.float()).sum() for x, y in zip(a, b, strict=True)]).sum().reshape(1)

    return Gram(dot(g_va, g_va), dot(g_va, g_vt), dot(g_vt, g_vt))


def write_combined(shared: Sequence[nn.Parameter], alpha: Tensor, beta: Tensor, g_va: Sequence[Tensor], g_vt: Sequence[Tensor]) -> None:
    """``p.grad = alpha G_va + beta G_vt`` for every shared parameter (replacing what a backward left there)."""
    a, b = float(alpha.reshape(-1)[0]), float(beta.reshape(-1)[0])
    for p, ga, gb in zip(shared, g_va, g_vt, strict=True):
        p.grad = (a * ga + b * gb).to(p.dtype)
