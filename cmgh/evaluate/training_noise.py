"""How well each per-sample indicator flags the misaligned triplets *during* training.

The trainer dumps, at configured steps, the per-sample scores of the batch it trained on: the
conflict cosine at its meeting point (``cos``), the cosine at the representation
(``cos_representation``) and both losses. These are exactly the signals a curriculum sees at that
moment. Joined with the generator's ground truth (``noise_labels.csv``, which training never
reads), they give AUROC per indicator and step window: the paper's premise, tested.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cmgh.data import formats
from cmgh.errors import DataError
from cmgh.evaluate.metrics import binary_auroc

# Indicator name -> (column expression, sign): noisier triplets should score higher.
INDICATORS = {
    "cos_meeting_point": ("cos", -1.0),
    "cos_representation": ("cos_representation", -1.0),
    "loss_va": ("loss_va", 1.0),
    "loss_vt": ("loss_vt", 1.0),
    "loss_total": ("loss_total", 1.0),
}
TARGETS = ("audio", "text", "either")


def label_clips(index: pd.DataFrame, noise: pd.DataFrame) -> pd.DataFrame:
    """Ground truth per extracted clip: the noise segment that contains the clip's midpoint."""
    clips = index[["item_id", "video_id", "clip_start", "clip_end"]].copy()
    clips["mid"] = 0.5 * (clips["clip_start"] + clips["clip_end"])
    merged = clips.merge(noise, on="video_id", suffixes=("", "_gt"))
    inside = (merged["mid"] >= merged["clip_start_gt"]) & (merged["mid"] < merged["clip_end_gt"])
    merged = merged[inside].drop_duplicates("item_id")
    if merged.empty:
        raise DataError("noise labels match no extracted clip (expected video_id and clip windows of the same corpus)")
    merged["audio"] = 1 - merged["audio_aligned"].astype(int)
    merged["text"] = 1 - merged["text_aligned"].astype(int)
    merged["either"] = merged[["audio", "text"]].max(axis=1)
    return merged[["item_id", "audio", "text", "either"]]


def read_scores(run_dir: Path) -> pd.DataFrame:
    files = sorted((Path(run_dir) / "scores").glob("step_*.csv"))
    if not files:
        raise DataError(f"{run_dir}/scores: no score dumps (set pretrain.score_every)")
    scores = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    scores["loss_total"] = scores["loss_va"] + scores["loss_vt"]
    return scores


def auroc_over_training(run_dir: Path, data_root: Path, features_root: Path, window: int) -> pd.DataFrame:
    """AUROC of every indicator for every target, over consecutive windows of ``window`` steps.

    A window of one epoch's worth of steps covers each triplet once, scored by the model of
    that moment.
    """
    index = pd.read_parquet(Path(features_root) / "howto100m" / "index.parquet")
    truth = label_clips(index, formats.read_noise_labels(Path(data_root) / "howto100m" / "noise_labels.csv"))
    scores = read_scores(run_dir).merge(truth, on="item_id")
    scores["window"] = scores["step"] // window * window
    rows = []
    for start, group in scores.groupby("window"):
        row: dict[str, float] = {"step": int(start), "n": len(group)}
        for name, (column, sign) in INDICATORS.items():
            for target in TARGETS:
                labels = group[target].to_numpy()
                row[f"{name}/{target}"] = binary_auroc(sign * group[column].to_numpy(dtype=float), labels) if 0 < labels.sum() < len(labels) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)
