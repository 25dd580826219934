"""What the harmonized step needs across data-parallel ranks: averages and gathers outside autograd, and each rank's share.

The harmonizer lives below :mod:`cmgh.train` (which owns the process group), so it sees the ranks
through the small :class:`Collectives` protocol; :class:`SingleProcess` is the one-process case, in
which every operation is the identity and a step computes exactly what it computed before ranks existed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    from cmgh.harmonize.curriculum import CurriculumWeights


class Collectives(Protocol):
    """Averages and row gathers across data-parallel ranks, outside autograd (identity in one process)."""

    size: int  # the number of ranks

    def mean(self, x: Tensor) -> Tensor: ...

    def gather(self, x: Tensor) -> Tensor: ...


class SingleProcess:
    """:class:`Collectives` of one process: nothing to exchange."""

    size = 1

    def mean(self, x: Tensor) -> Tensor:
        return x

    def gather(self, x: Tensor) -> Tensor:
        return x.detach()


def rank_shares(w: CurriculumWeights | None, valid_vt: Tensor, valid_va: Tensor | None, ranks: Collectives) -> tuple[float, float]:
    """Per objective, this rank's share of the global batch's weight, relative to an even split (1.0 in one process).

    Each rank averages its own rows' weighted losses and data parallelism averages the ranks'
    gradients: that is the global batch's weighted mean only when every rank holds the same total
    weight. A curriculum that drops rows, or rows without text or audio spread unevenly over ranks,
    break that; scaling each rank's objective by ``S_r / mean_r S_r`` (``S_r`` its rows' total
    weight) restores the global mean exactly, so that two ranks equal one process.
    """
    wa = torch.ones_like(valid_vt, dtype=torch.float64) if w is None else w.w_va.double()
    wt = torch.ones_like(valid_vt, dtype=torch.float64) if w is None else w.w_vt.double()
    if valid_va is not None:
        wa = wa * valid_va.double()
    local = torch.stack([wa.sum(), (wt * valid_vt.double()).sum()])
    even = ranks.mean(local)
    return tuple(float(x / e) if float(e) > 0 else 0.0 for x, e in zip(local, even, strict=True))  # type: ignore[return-value]


def global_mean_losses(l_va: Tensor, l_vt: Tensor, valid_vt: Tensor, valid_va: Tensor | None, ranks: Collectives) -> tuple[float, float] | None:
    """The global batch's mean ``L_va`` and ``L_vt`` (over the rows with audio, with text), identical on every rank;
    None when the global batch has no row of one of them (no text at all, or no audio): nothing to balance."""
    rows_va = torch.ones_like(valid_vt, dtype=torch.bool) if valid_va is None else valid_va.bool()
    rows_vt = valid_vt.bool()
    sums = torch.stack([(l_va.detach().double() * rows_va).sum(), (l_vt.detach().double() * rows_vt).sum()])
    counts = torch.stack([rows_va.sum(), rows_vt.sum()]).double()
    total = ranks.mean(torch.cat([sums, counts]))
    if bool((total[2:] == 0).any()):
        return None
    return float(total[0] / total[2]), float(total[1] / total[3])
