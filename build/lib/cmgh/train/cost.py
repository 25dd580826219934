"""What a training step costs: its time and the run's peak memory, recorded every step so that methods compare at equal compute.

The step time is the step alone (forward, harmonized backward, update), without the loader's
wait, on this rank; on CUDA the device is synchronised first, or the time would be that of
queueing kernels. Peak memory is the device allocator's peak on CUDA (what limits the batch on
a GPU) and the process's peak resident set on CPU (the allocator keeps no count there): both
are a running maximum over the run, not one step's.
"""

from __future__ import annotations

import resource
import sys
import time

import torch

MACHINE_METRICS = ("samples_per_s", "step_time_s", "peak_memory_mb")  # logged every step; they vary between runs of one config


def step_seconds(started: float, device: torch.device) -> float:
    """Seconds since ``started`` (a ``time.perf_counter()``), the device's queued work included."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def peak_memory_mb(device: torch.device) -> float:
    """The run's peak memory so far in MB: CUDA allocator peak on a GPU, peak resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
