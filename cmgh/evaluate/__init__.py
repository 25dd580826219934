"""Evaluation: the downstream tasks (classification, multi-label tagging, retrieval, noise detection).

Kept import-free: the workflow reads the task names and the features each task reads at parse
time, without importing torch. The task modules register themselves under these names.
"""

from collections.abc import Iterable

# task -> the feature set (a dataset under paths.features) its evaluation reads
TASK_DATASETS: dict[str, str] = {"kinetics": "kinetics", "audioset": "audioset", "msrvtt": "msrvtt", "noise": "howto100m"}
TASKS: tuple[str, ...] = tuple(TASK_DATASETS)
# Evaluations of a pre-training run's own records (its score dumps), not of its encoder: no random
# init to compare, no feature set of their own (they read the run's corpora). Registered in
# cmgh.evaluate.registry.RUN_TASK_REGISTRY; the workflow gives them a job per pre-training run.
NOISE_TRAINING = "noise_training"  # noise detection over training (cmgh.evaluate.training_noise)
RUN_TASKS: tuple[str, ...] = (NOISE_TRAINING,)
GROUND_TRUTH_TASKS = ("noise", NOISE_TRAINING)  # scored against the generator's noise labels: only generated data has them


def planned_tasks(data_source: str, tasks: tuple[str, ...] = TASKS, selected: Iterable[str] | None = None) -> tuple[str, ...]:
    """The ``tasks`` a workflow evaluates: those ``selected`` (`evaluate.tasks`, default all) on
    generated data; on downloaded data, those that need no generated ground truth (real data's
    noise is unknown)."""
    chosen = set(tasks if selected is None else selected)
    return tuple(t for t in tasks if t in chosen and (data_source == "synth" or t not in GROUND_TRUTH_TASKS))

# validation metrics a sweep may optimize (sweep.objective) -> (task, key in its metrics.json); never a test split
VALIDATION_METRICS: dict[str, tuple[str, str]] = {"kinetics_val_top1": ("kinetics", "val_top1"), "audioset_val_mAP": ("audioset", "val_mAP")}
