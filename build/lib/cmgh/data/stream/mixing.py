"""The mixing schedule of the pre-training stream: a pure function of (seed, step).

Every random draw comes from a counter-based generator (Philox) keyed by the seed and a domain
(schedule, order of a corpus, one sample of a corpus) and started at a counter (step, epoch,
draw number). Nothing is carried from one draw to the next, so any worker can compute any step,
and resuming is restarting at a :class:`StreamPosition`.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cmgh.errors import ConfigError

_U64 = (1 << 64) - 1
DOMAINS = {"schedule": 0, "order": 1, "sample": 2}


def generator(seed: int, domain: str, name: str = "", counter: int = 0) -> np.random.Generator:
    """An independent stream for (seed, domain, corpus ``name``, ``counter``).

    The corpus enters by the CRC of its name, not its position in ``pretrain.corpora``, so adding a
    corpus does not change the samples another corpus draws.
    """
    key = np.array([int(seed) & _U64, (DOMAINS[domain] << 32) | zlib.crc32(name.encode())], dtype=np.uint64)
    start = np.array([0, 0, 0, int(counter) & _U64], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=key, counter=start))


@dataclass(frozen=True)
class StreamPosition:
    """Where a stream starts: the step and how many samples of each corpus were drawn before it."""

    step: int = 0
    consumed: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"step": int(self.step), "consumed": {k: int(v) for k, v in self.consumed.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StreamPosition:
        return cls(int(data["step"]), {str(k): int(v) for k, v in data["consumed"].items()})


class Schedule:
    """Which corpus fills each of the ``global_batch`` slots of a step, and its draw number ``k``."""

    def __init__(self, names: Sequence[str], weights: Sequence[float], global_batch: int, seed: int) -> None:
        w = np.asarray(weights, dtype=np.float64)
        if len(names) != len(w) or not len(names):
            raise ConfigError(f"pretrain.corpora: need one weight per corpus, got {list(names)} and {list(weights)}")
        if (w < 0).any() or w.sum() <= 0:
            raise ConfigError(f"pretrain.corpora: weights {list(weights)} must be >= 0 with a positive sum")
        if global_batch < 1:
            raise ConfigError(f"pretrain.batch_size: {global_batch} must be >= 1")
        self.names = tuple(names)
        self.weights = w / w.sum()
        self.global_batch = int(global_batch)
        self.seed = int(seed)

    def counts(self, step: int) -> np.ndarray:
        """Samples of each corpus in the global batch of ``step`` (multinomial by weight)."""
        return generator(self.seed, "schedule", "", step).multinomial(self.global_batch, self.weights)

    def slots(self, step: int, consumed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(counts, corpus of each slot, k of each slot)``; ``consumed`` = draws per corpus before ``step``."""
        rng = generator(self.seed, "schedule", "", step)
        counts = rng.multinomial(self.global_batch, self.weights)
        corpus = rng.permutation(np.repeat(np.arange(len(self.names)), counts))
        k = np.empty(self.global_batch, dtype=np.int64)
        for c in np.flatnonzero(counts):
            where = corpus == c
            k[where] = int(consumed[c]) + np.arange(int(counts[c]))
        return counts, corpus, k

    def consumed(self, position: StreamPosition) -> np.ndarray:
        return np.array([int(position.consumed.get(name, 0)) for name in self.names], dtype=np.int64)

    def advance(self, position: StreamPosition, step: int) -> StreamPosition:
        """The position at ``step`` >= ``position.step`` (walks the counts of the steps between)."""
        if step < position.step:
            raise ValueError(f"cannot go back from step {position.step} to {step}")
        consumed = self.consumed(position)
        for s in range(position.step, step):
            consumed += self.counts(s)
        return StreamPosition(int(step), dict(zip(self.names, (int(v) for v in consumed), strict=True)))
