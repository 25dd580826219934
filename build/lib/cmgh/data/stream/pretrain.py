"""The pre-training stream: mixed corpora by weight, split over ranks and DataLoader workers.

``DataLoader(PretrainStream(...), batch_size=None, num_workers=W)`` delivers the local batches of
steps ``start.step, start.step + 1, ...`` in order. The schedule (:mod:`cmgh.data.stream.mixing`)
decides, for each step, which corpus fills each global slot and which draw ``k`` of that corpus
it is; the corpus's ``k``-th draw is ``order(epoch=k // N)[k % N]``, so every sample of a corpus
is drawn exactly once per corpus epoch over all ranks. Per-sample randomness comes from a
generator keyed by (seed, corpus, k): the sequence is the same for any worker count, and a run
resumed at :meth:`PretrainStream.position` continues it exactly.

Besides the contract's keys a batch carries ``jitter`` float32 [B,3]: each clip's fused colour
jitter (:func:`cmgh.data.stream.augment.jitter_map`, identity for decoded corpora), which the trainer
applies on its device with :func:`cmgh.data.stream.augment.apply_jitter` before the step. When a
source was built with ground truth (the oracle control only, :mod:`cmgh.data.stream.truth`), every
batch carries the two bool ``[B]`` flags of :data:`~cmgh.data.datasets.noise_labels.TRUTH_KEYS`,
per row of this rank's slice; rows of a corpus without ground truth (AudioSet pairs) get False.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from cmgh.data.datasets.noise_labels import TRUTH_KEYS, ClipTruth
from cmgh.data.stream.decoded import collate as stack
from cmgh.data.stream.mixing import Schedule, StreamPosition, generator
from cmgh.errors import ConfigError, DataError


log = logging.getLogger(__name__)
Sample = dict[str, Any]
MAX_SUBSTITUTES = 16  # consecutive unreadable samples before a corpus is declared broken


class Source(Protocol):
    dataset: str
    truth: ClipTruth | None  # the corpus's ground truth when the stream is to carry it

    def __len__(self) -> int: ...
    def order(self, epoch: int, seed: int) -> np.ndarray: ...
    def sample(self, i: int, rng: np.random.Generator) -> Sample: ...


def collate(samples: list[Sample], step: int, skipped: int = 0) -> Sample:
    """The batch dict of the stream contract (tensors stacked, ids as lists)."""
    batch = stack(samples)
    for key in ("clip_start", "clip_end"):
        batch[key] = torch.tensor([float(s[key]) for s in samples], dtype=torch.float64)
    batch["has_text"] = torch.tensor([bool(s["has_text"]) for s in samples], dtype=torch.bool)
    batch["has_audio"] = torch.tensor([bool(s.get("has_audio", True)) for s in samples], dtype=torch.bool)
    batch["step"] = int(step)
    batch["skipped"] = int(skipped)
    return batch


class PretrainStream(IterableDataset[Sample]):
    """Local batches of ``global_batch // world_size`` samples, one per step, from ``start`` to ``stop``."""

    def __init__(
        self,
        corpora: Sequence[tuple[str, float, Source]],
        global_batch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start: StreamPosition | None = None,
        stop: int | None = None,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size or global_batch % world_size:
            raise ConfigError(f"pretrain.batch_size: {global_batch} must split evenly over {world_size} ranks (rank {rank})")
        for name, _, source in corpora:
            if len(source) == 0:
                raise DataError(f"{name}: the corpus has no samples (is its index empty?)")
        self.names = [name for name, _, _ in corpora]
        self.sources = [source for _, _, source in corpora]
        self.schedule = Schedule(self.names, [w for _, w, _ in corpora], global_batch, seed)
        self.seed = int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.local = global_batch // world_size
        self.start = start or StreamPosition(0, {})
        self.stop = stop
        self._known = self.schedule.advance(self.start, self.start.step)
        self._orders: dict[tuple[int, int], np.ndarray] = {}
        self.truth = any(source.truth is not None for source in self.sources)

    def position(self, step: int) -> StreamPosition:
        """The position at ``step`` (what resume.pt saves); walks forward from the last one asked."""
        base = self._known if self._known.step <= step else self.start
        self._known = self.schedule.advance(base, step)
        return self._known

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        consumed = self.schedule.consumed(self.start)
        step = self.start.step
        lo, hi = self.rank * self.local, (self.rank + 1) * self.local
        while self.stop is None or step < self.stop:
            if (step - self.start.step) % workers == worker:
                counts, corpus, k = self.schedule.slots(step, consumed)
                yield self._batch(step, corpus[lo:hi], k[lo:hi])
            else:
                counts = self.schedule.counts(step)
            consumed += counts
            step += 1

    def _order(self, c: int, epoch: int) -> np.ndarray:
        key = (c, epoch)
        if key not in self._orders:
            for old in [k for k in self._orders if k[0] == c and k[1] < epoch - 1]:
                del self._orders[old]
            self._orders[key] = self.sources[c].order(epoch, self.seed)
        return self._orders[key]

    def _batch(self, step: int, corpus: np.ndarray, draws: np.ndarray) -> Sample:
        samples, skipped = [], 0
        for c, k in zip(corpus.tolist(), draws.tolist(), strict=True):
            sample, misses = self._draw(c, k)
            if self.truth:
                for key in TRUTH_KEYS:
                    sample.setdefault(key, False)
            samples.append(sample)
            skipped += misses
        return collate(samples, step, skipped)

    def _draw(self, c: int, k: int) -> tuple[Sample, int]:
        """Draw ``k`` of corpus ``c``; an unreadable sample is replaced by the next one in the order
        (same generator), so the run goes on and a resumed run makes the same substitution."""
        source, n = self.sources[c], len(self.sources[c])
        for miss in range(min(MAX_SUBSTITUTES, n)):
            j = k + miss
            i = int(self._order(c, j // n)[j % n])
            try:
                return source.sample(i, generator(self.seed, "sample", self.names[c], k)), miss
            except DataError as exc:
                log.warning("%s: skipping an unreadable sample (%s); substituting the next one in order", self.names[c], exc)
        raise DataError(f"{self.names[c]}: {MAX_SUBSTITUTES} consecutive samples unreadable around draw {k}; the packed shards look broken")
