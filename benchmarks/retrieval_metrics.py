"""Cost of ``retrieval_metrics`` on a 10k x 10k similarity matrix, relative to one row-wise sort.

The sort is the natural baseline (the textbook implementation argsorts every row); the metric
counts ``sim >= diag`` per row instead, so it should cost at most ~1.5x a sort. Both are timed in
the same process, best of 3, so the ratio is robust to the machine's absolute speed.

    .venv/bin/python benchmarks/retrieval_metrics.py
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from cmgh.evaluate.metrics import retrieval_metrics

SIZE = 10_000
REPEATS = 3


def best_of(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    """Fastest wall time of ``repeats`` calls (the minimum is the least noisy estimate)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    gen = torch.Generator().manual_seed(0)
    sim = torch.randn(SIZE, SIZE, generator=gen, dtype=torch.float32)
    print(f"sim: {SIZE} x {SIZE} float32, torch {torch.__version__}, {torch.get_num_threads()} threads")
    t_metric = best_of(lambda: retrieval_metrics(sim))
    t_sort = best_of(lambda: torch.sort(sim, dim=1))
    print(f"retrieval_metrics: {t_metric:.3f} s (best of {REPEATS}) -> {retrieval_metrics(sim)}")
    print(f"torch.sort(sim, dim=1): {t_sort:.3f} s (best of {REPEATS})")
    print(f"retrieval_metrics / sort time ratio: {t_metric / t_sort:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
