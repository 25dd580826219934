"""How well each per-sample indicator flags the misaligned triplets *during* training.

The trainer dumps, at configured steps, the per-sample scores of the batch it trained on: the
conflict cosine at its meeting point (``cos``), the cosine at the representation
(``cos_representation``) and both losses. These are exactly the signals a curriculum sees at that
moment. Joined with the generator's ground truth (``noise_labels.csv``, which training never
reads; the join of :mod:`cmgh.evaluate.noise_truth`), they give AUROC per indicator and step
window: the paper's premise, tested.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cmgh import config as config_mod
from cmgh import layout
from cmgh.errors import DataError
from cmgh.evaluate import TASK_DATASETS
from cmgh.evaluate.metrics import binary_auroc
from cmgh.data import formats
from cmgh.evaluate.noise_truth import DUMP_COLUMNS, TARGETS, TRAINING_INDICATORS, label_clips, loss_total
from cmgh.layout import PathLike

def run_vt_weight(run_dir: PathLike) -> float:
    """The ``pretrain.vt_weight`` a run trained with (its config.yaml beside the score dumps)."""
    path = Path(run_dir) / layout.CONFIG
    if not path.is_file():
        raise DataError(f"{path}: the run's config is missing (needed for its pretrain.vt_weight)")
    return float(config_mod.load(path).pretrain.vt_weight)


def read_scores(run_dir: PathLike, vt_weight: float | None = None) -> pd.DataFrame:
    """Every score dump of a run, indicators named as in :data:`~cmgh.evaluate.noise_truth.TRAINING_INDICATORS`; ``loss_total`` with the
    run's own ``vt_weight`` unless one is given."""
    files = layout.score_files(run_dir)
    if not files:
        raise DataError(f"{Path(run_dir) / layout.SCORES_DIR}: no score dumps (set pretrain.score_every)")
    weight = run_vt_weight(run_dir) if vt_weight is None else float(vt_weight)
    scores = pd.concat([pd.read_csv(f) for f in files], ignore_index=True).rename(columns=DUMP_COLUMNS)
    scores["loss_total"] = loss_total(scores["loss_va"], scores["loss_vt"], weight)
    return scores


def auroc_over_training(run_dir: Path, data_root: Path, features_root: Path, window: int, vt_weight: float | None = None,
                        fmt: str = "decoded") -> pd.DataFrame:
    """AUROC of every indicator for every target, over consecutive windows of ``window`` steps.

    Each dumped row is labelled by its own window (``clip_start``, ``clip_end``: streamed clips
    draw a new window every epoch); the corpus index of ``fmt`` (``features.format``) gives its
    video. A window of one epoch's worth of steps covers each triplet once, scored by the model
    of that moment.
    """
    corpus = TASK_DATASETS["noise"]
    index = pd.read_parquet(layout.corpus_dir(features_root, corpus, fmt) / layout.FEATURE_INDEX, columns=["item_id", "video_id"])
    scores = read_scores(run_dir, vt_weight)
    scores = scores[scores["dataset"] == corpus].reset_index(drop=True)
    rows = scores.assign(row=np.arange(len(scores))).merge(index, on="item_id")
    clips = rows[["row", "video_id", "clip_start", "clip_end"]].rename(columns={"row": "item_id"})
    truth = label_clips(clips, formats.read_noise_labels(layout.noise_labels(data_root))).rename(columns={"item_id": "row"})
    scores = rows.drop(columns=["video_id"]).merge(truth, on="row")
    scores["window"] = scores["step"] // window * window
    rows = []
    for start, group in scores.groupby("window"):
        row: dict[str, float] = {"step": int(start), "n": len(group)}
        for name, sign in TRAINING_INDICATORS.items():
            for target in TARGETS:
                labels = group[target].to_numpy()
                row[f"{name}/{target}"] = binary_auroc(sign * group[name].to_numpy(dtype=float), labels) if 0 < labels.sum() < len(labels) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)
