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
NOISE_TRAINING = "noise_training"  # noise detection over training (cmgh.evaluate.detection_over_training)
RUN_TASKS: tuple[str, ...] = (NOISE_TRAINING,)
GROUND_TRUTH_TASKS = ("noise", NOISE_TRAINING)  # scored against the generator's noise labels: only generated data has them
# task -> its headline metric (a key of its metrics.json): the one number per task the report's summary
# compares, and the one MLflow also puts on the pre-training run the evaluation scored (cmgh.track).
HEADLINE_METRICS: dict[str, str] = {"kinetics": "top1", "audioset": "mAP", "msrvtt": "t2v_R@10", "noise": "auroc/cos_parameters/either"}


def planned_tasks(data_source: str, tasks: tuple[str, ...] = TASKS, selected: Iterable[str] | None = None) -> tuple[str, ...]:
    """The ``tasks`` a workflow evaluates: those ``selected`` (`evaluate.tasks`, default all) on
    generated data; on downloaded data, those that need no generated ground truth (real data's
    noise is unknown)."""
    chosen = set(tasks if selected is None else selected)
    return tuple(t for t in tasks if t in chosen and (data_source == "synth" or t not in GROUND_TRUTH_TASKS))


# Noise detection: how well an indicator, scored per triplet, finds the misaligned ones (the noise).
TARGETS = ("audio", "text", "either")  # misaligned audio, misaligned text, either of them

# Indicator -> sign: score = sign * value, a higher score flags a noisier triplet (the two objectives'
# gradients conflict, a low cosine, on misaligned triplets; their losses are high).
INDICATORS: dict[str, float] = {
    "cos_meeting_point": -1.0,  # at the run's configured meeting point (training dumps only)
    "cos_representation": -1.0,
    "cos_representation_exact": -1.0,
    "cos_parameters": -1.0,  # over the last evaluate.noise.parameter_blocks video blocks
    "cos_all_parameters": -1.0,  # over every shared parameter (exact per-sample Gram, cmgh.harmonize.ghost)
    "loss_va": 1.0,
    "loss_vt": 1.0,
    "loss_total": 1.0,
}


def _subset(*names: str) -> dict[str, float]:
    return {name: INDICATORS[name] for name in names}


# What the final-checkpoint evaluation scores (metrics.json ``auroc/<name>/<target>``, roc.csv); the report reads these.
NOISE_INDICATORS = _subset(
    "cos_representation", "cos_representation_exact", "cos_parameters", "cos_all_parameters", "loss_va", "loss_vt", "loss_total"
)
# What the trainer's score dumps hold (after :data:`cmgh.evaluate.noise_truth.DUMP_COLUMNS` renaming and
# :func:`~cmgh.evaluate.noise_truth.loss_total`).
TRAINING_INDICATORS = _subset("cos_meeting_point", "cos_representation", "loss_va", "loss_vt", "loss_total")

# validation metrics a sweep may optimize (sweep.objective) -> (task, key in its metrics.json); never a test split
VALIDATION_METRICS: dict[str, tuple[str, str]] = {"kinetics_val_top1": ("kinetics", "val_top1"), "audioset_val_mAP": ("audioset", "val_mAP")}
