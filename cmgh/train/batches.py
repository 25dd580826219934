"""Deterministic, resumable stream of pre-training batches.

The order is a function of (seed, epoch) only, and the position is (epoch, batch), so a resumed
run sees exactly the batches an uninterrupted one would. Under data parallelism every rank walks
the same global order and takes its own contiguous slice of each global batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from cmgh.data.datasets import Sample, collate
from cmgh.errors import DataError


@dataclass
class Position:
    epoch: int = 0
    batch: int = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    @classmethod
    def from_state(cls, state: dict[str, int]) -> "Position":
        return cls(int(state["epoch"]), int(state["batch"]))


class BatchStream:
    def __init__(self, dataset: Dataset[Sample], global_batch: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        n = len(dataset)  # type: ignore[arg-type]
        if global_batch % world_size:
            raise DataError(f"pretrain.batch_size: {global_batch} is not divisible by the world size {world_size}")
        if n < global_batch:
            raise DataError(f"pretrain.batch_size: {global_batch} exceeds the {n} pre-training clips; lower it or generate more data")
        self.dataset, self.global_batch, self.seed = dataset, global_batch, seed
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = n // global_batch  # drop_last: contrastive losses want full batches
        self.position = Position()
        self._perm: torch.Tensor | None = None
        self._perm_epoch = -1

    def _order(self, epoch: int) -> torch.Tensor:
        if self._perm_epoch != epoch:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perm = torch.randperm(len(self.dataset), generator=gen)  # type: ignore[arg-type]
            self._perm_epoch = epoch
        assert self._perm is not None
        return self._perm

    def next_indices(self) -> list[int]:
        pos = self.position
        if pos.batch >= self.batches_per_epoch:
            pos.epoch, pos.batch = pos.epoch + 1, 0
        order = self._order(pos.epoch)
        local = self.global_batch // self.world_size
        lo = pos.batch * self.global_batch + self.rank * local
        pos.batch += 1
        return order[lo : lo + local].tolist()

    def __iter__(self) -> Iterator[Sample]:
        while True:
            yield self.next_batch()

    def next_batch(self) -> Sample:
        return collate([self.dataset[i] for i in self.next_indices()])
