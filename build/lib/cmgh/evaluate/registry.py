"""The evaluation tasks by name: each task module registers its runner here under its name.

The names (and the feature set each task reads) are fixed in the import-free
:mod:`cmgh.evaluate` (``TASKS``, ``TASK_DATASETS``, ``RUN_TASKS``); registering any other name is
a bug. Importing :mod:`cmgh.evaluate.run` imports every task module, filling the registries.

Two kinds: a task of :data:`TASK_REGISTRY` scores a checkpoint's encoder (or its random init); a
task of :data:`RUN_TASK_REGISTRY` scores what a pre-training run recorded while it trained (its
score dumps), so it needs no encoder and reports over training steps as well as at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cmgh.config import Config
from cmgh.evaluate import RUN_TASKS, TASK_DATASETS
from cmgh.evaluate.embeddings import Timer
from cmgh.evaluate.encoder import Encoder
from cmgh.registry import Registry

# (evaluation config, encoder, output folder, timer) -> (metrics, params) of metrics.json
Runner = Callable[[Config, Encoder, Path, Timer], tuple[dict[str, float], dict[str, Any]]]
# training step -> metrics at that step (MLflow draws each metric over training)
Series = dict[int, dict[str, float]]
# (evaluation config, pre-training run folder, output folder, timer) -> (metrics, params, series)
RunRunner = Callable[[Config, Path, Path, Timer], tuple[dict[str, float], dict[str, Any], Series]]

TASK_REGISTRY: Registry[Runner] = Registry("evaluation task", "--task")
RUN_TASK_REGISTRY: Registry[RunRunner] = Registry("evaluation task of a pre-training run", "--task")


def register(task: str) -> Callable[[Runner], Runner]:
    """Register ``task``'s runner; ``task`` must be one of :data:`cmgh.evaluate.TASKS`."""
    if task not in TASK_DATASETS:
        raise ValueError(f"evaluation task {task!r} is not in cmgh.evaluate.TASK_DATASETS")
    return TASK_REGISTRY.register(task)


def register_run(task: str) -> Callable[[RunRunner], RunRunner]:
    """Register the runner of ``task``, one of :data:`cmgh.evaluate.RUN_TASKS`."""
    if task not in RUN_TASKS:
        raise ValueError(f"evaluation task {task!r} is not in cmgh.evaluate.RUN_TASKS")
    return RUN_TASK_REGISTRY.register(task)
