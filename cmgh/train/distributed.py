"""Data parallelism under ``torchrun``: NCCL on CUDA, gloo on CPU (so it is testable here).

Per-sample harmonization stays local to each rank; what crosses ranks is (1) the embeddings, so
that NCE/MIL-NCE see the global batch's negatives as in VATT, and (2) the backbone gradients,
averaged once per step in one flat buffer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env() -> DistInfo:
    """Join the process group ``torchrun`` describes through RANK/WORLD_SIZE; single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local)


def device_for(info: DistInfo) -> torch.device:
    return torch.device(f"cuda:{info.local_rank}") if torch.cuda.is_available() else torch.device("cpu")


class _GatherRows(torch.autograd.Function):
    """all_gather whose backward all-reduces the (made contiguous) gradient and keeps this rank's rows.

    torch.distributed.nn's all_gather hands non-contiguous gradients (e.g. from einsum) to gloo's
    all_to_all, which then mixes up rows; all_reduce of a contiguous buffer is simple and exact.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
        ctx.rank, ctx.rows = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows], None, None


class RowGather:
    """Concatenate a tensor's rows over ranks; float tensors differentiably, so that each rank's
    embeddings receive the gradients of every rank's losses (all_gather's backward sums them).

    Assumes equal local batch sizes (the pre-training stream gives every rank ``batch_size // world_size`` rows).
    """

    def __init__(self, info: DistInfo, local_batch: int) -> None:
        self.info = info
        self.rows = slice(info.rank * local_batch, (info.rank + 1) * local_batch)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            return _GatherRows.apply(x, self.info.rank, self.info.world_size)
        return gather_rows(x, self.info)


def gather_rows(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Every rank's rows of ``x`` in rank order, outside autograd (bool tensors too: gloo has none, they travel as uint8)."""
    payload = x.detach().to(torch.uint8) if x.dtype == torch.bool else x.detach()
    parts = [torch.empty_like(payload) for _ in range(info.world_size)]
    dist.all_gather(parts, payload.contiguous())
    out = torch.cat(parts, dim=0)
    return out.bool() if x.dtype == torch.bool else out


class Collectives:
    """What the harmonizer needs across ranks, outside autograd: averages (batch-level Gram, gradients,
    losses a balancer reads) and row gathers (the loss windows of stateful curricula). In one process
    both are the identity, so the same code serves both."""

    def __init__(self, info: DistInfo) -> None:
        self.info = info
        self.size = info.world_size

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` averaged over ranks (a new tensor; ``x`` itself in one process)."""
        if not self.info.enabled:
            return x
        out = x.detach().contiguous().clone()
        dist.all_reduce(out)
        return out / self.info.world_size

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's rows of ``x`` in rank order, detached (``x`` itself in one process)."""
        return gather_rows(x, self.info) if self.info.enabled else x.detach()


def all_true(flag: bool, info: DistInfo) -> bool:
    """True on every rank only if true on all of them: ranks must take the same branch."""
    if not info.enabled:
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def mean_over_ranks(metrics: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average logged scalars over ranks (exact for the losses and fractions of equal-sized local
    batches; for cosine quantiles it is the mean of the per-rank quantiles)."""
    if not info.enabled:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(values)
    return {k: float(v) / info.world_size for k, v in zip(keys, values.tolist(), strict=True)}


def average_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """All-reduce every gradient in one flat buffer and divide by the world size."""
    if not info.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
