"""Atomic, resumable checkpoints: model, optimizer, scheduler, RNG states, curriculum, data position.

A run in progress saves ``resume.pt``; only a finished run has ``checkpoint.pt``. The split is what
makes a killed Snakemake job resumable: Snakemake deletes a job's declared outputs before it reruns
the job, so the state a rerun resumes from must not be one of them.
Loaded with ``weights_only=True``: a checkpoint is data, never code.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmgh import layout
from cmgh.errors import DataError
from cmgh.io import atomic_write

def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_to_tensors(np.random.get_state()),
        "python": _python_state_to_tensor(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(_tensors_to_numpy_state(state["numpy"]))
    random.setstate(_tensor_to_python_state(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# weights_only=True admits tensors, dicts, lists, numbers and strings: RNG states are converted.
def _numpy_state_to_tensors(state: tuple[Any, ...]) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = state
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}


def _tensors_to_numpy_state(state: dict[str, Any]) -> tuple[Any, ...]:
    return (state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["cached"])


def _python_state_to_tensor(state: tuple[Any, ...]) -> dict[str, Any]:
    version, internal, gauss = state
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _tensor_to_python_state(state: dict[str, Any]) -> tuple[Any, ...]:
    return (state["version"], tuple(int(v) for v in state["internal"].tolist()), state["gauss"])


def save(directory: str | Path, payload: dict[str, Any], name: str = layout.CHECKPOINT) -> Path:
    """Write ``payload`` to ``directory/name`` via a temp file and rename."""
    target = Path(directory) / name
    atomic_write(target, lambda fh: torch.save(payload, fh))
    return target


def latest(directory: str | Path) -> Path:
    """The newest state of a run folder: ``resume.pt`` while training (or after a kill), else
    ``checkpoint.pt`` (which may not exist yet)."""
    directory = Path(directory)
    resume, final = directory / layout.RESUME, directory / layout.CHECKPOINT
    if resume.is_file() and (not final.is_file() or resume.stat().st_mtime_ns >= final.stat().st_mtime_ns):
        return resume
    return final


def load(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """A saved state (a run folder: its newest). ``mmap`` maps the tensors instead of reading them:
    a look at ``meta`` then costs the pickle, not the weights."""
    path = Path(path)
    if path.is_dir():
        path = latest(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # a truncated or foreign file: say which and why, in one line
        raise DataError(f"{path}: not a readable cmgh checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
