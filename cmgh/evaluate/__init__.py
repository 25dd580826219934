"""Evaluation: the downstream tasks (classification, multi-label tagging, retrieval, noise detection).

Kept import-free: the workflow reads the task names and the features each task reads at parse
time, without importing torch. The task modules register themselves under these names.
"""

# task -> the feature set (a dataset under paths.features) its evaluation reads
TASK_DATASETS: dict[str, str] = {"kinetics": "kinetics", "audioset": "audioset", "msrvtt": "msrvtt", "noise": "howto100m"}
TASKS: tuple[str, ...] = tuple(TASK_DATASETS)

# validation metrics a sweep may optimize (sweep.objective) -> (task, key in its metrics.json); never a test split
VALIDATION_METRICS: dict[str, tuple[str, str]] = {"kinetics_val_top1": ("kinetics", "val_top1"), "audioset_val_mAP": ("audioset", "val_mAP")}
