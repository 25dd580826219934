"""A trial's validation value, and the validation split behind it: its size and its resolution
(one clip's share: the step of a top-1 accuracy, a convention for mAP)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from cmgh import layout
from cmgh.config import Config
from cmgh.evaluate import VALIDATION_METRICS
from cmgh.sweep.storage import SweepError

# One clip's share of the split, in the metric's unit: top-1 is in percent (exactly its step); mAP is a
# fraction with no fixed step, so one clip's share is a convention there, the smallest difference worth a word.
UNIT: dict[str, float] = {"kinetics_val_top1": 100.0, "audioset_val_mAP": 1.0}  # every key of VALIDATION_METRICS


def resolution(objective: str, clips: int) -> float:
    """The resolution of ``objective`` on a validation split of ``clips`` clips (100 / n for top-1)."""
    return UNIT[objective] / max(int(clips), 1)


def evaluation_clips(eval_dir: Path) -> int | None:
    """The validation clips an evaluation scored (``params.n_val`` of its metrics.json)."""
    try:
        return int(json.loads((Path(eval_dir) / layout.METRICS).read_text())["params"]["n_val"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def validation_value(cfg: Config, run_dir: Path, eval_dir: Path, *, random_init: bool = False) -> float:
    """The objective on the validation split for the checkpoint in ``run_dir`` (its initial weights
    with ``random_init``: the floor); RNG state untouched."""
    from cmgh import checkpoint as ckpt
    from cmgh.evaluate.run import evaluate

    task, key = VALIDATION_METRICS[str(cfg.sweep.objective)]
    rng = ckpt.rng_state()  # the evaluation seeds torch; the trial's training must not notice
    try:
        result = evaluate(cfg, task, run_dir, eval_dir, random_init=random_init)
    finally:
        ckpt.set_rng_state(rng)
    value = result.get(key)
    if value is None or not math.isfinite(float(value)):
        raise SweepError(f"{eval_dir}: {task} {key} is not a finite number ({value!r})")
    return float(value)
