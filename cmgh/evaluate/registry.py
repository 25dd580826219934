"""The evaluation tasks by name: each task module registers its runner here under its name.

The names (and the feature set each task reads) are fixed in the import-free
:mod:`cmgh.evaluate` (``TASKS``, ``TASK_DATASETS``); registering any other name is a bug.
Importing :mod:`cmgh.evaluate.run` imports every task module, filling the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cmgh.config import Config
from cmgh.evaluate import TASK_DATASETS
from cmgh.evaluate.embeddings import Timer
from cmgh.evaluate.encoder import Encoder
from cmgh.registry import Registry

# (evaluation config, encoder, output folder, timer) -> (metrics, params) of metrics.json
Runner = Callable[[Config, Encoder, Path, Timer], tuple[dict[str, float], dict[str, Any]]]

TASK_REGISTRY: Registry[Runner] = Registry("evaluation task", "--task")


def register(task: str) -> Callable[[Runner], Runner]:
    """Register ``task``'s runner; ``task`` must be one of :data:`cmgh.evaluate.TASKS`."""
    if task not in TASK_DATASETS:
        raise ValueError(f"evaluation task {task!r} is not in cmgh.evaluate.TASK_DATASETS")
    return TASK_REGISTRY.register(task)
