"""How well each per-sample indicator flags the misaligned triplets *during* training.

The trainer dumps, at configured steps, the per-sample scores of the batch it trained on: the
conflict cosine at its meeting point (``cos``), the cosine at the representation
(``cos_representation``) and both losses. These are exactly the signals a curriculum sees at that
moment. Joined with the generator's ground truth (each generated corpus's own
``noise_labels.csv``, which training never reads; the join of :mod:`cmgh.evaluate.noise_truth`),
they give AUROC per corpus, indicator and step window: the paper's premise, tested on the
narrative corpus (HowTo100M) and the non-narrative one (YouTube-8M) alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cmgh import config as config_mod
from cmgh import layout
from cmgh.data.tables import read_parquet
from cmgh.errors import DataError
from cmgh.evaluate.metrics import binary_auroc
from cmgh.evaluate.noise_truth import DUMP_COLUMNS, TARGETS, TRAINING_INDICATORS, corpus_labels, label_clips, labelled_corpora, loss_total
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
                        fmt: str = "decoded", datasets: Sequence[str] | None = None) -> pd.DataFrame:
    """AUROC of every indicator for every target, per corpus and consecutive windows of ``window``
    steps: columns ``dataset, step, n, <indicator>/<target>``.

    The corpora are those of ``datasets`` that were dumped (no rows when none was; default: every
    dumped corpus with a ground truth, :func:`~cmgh.evaluate.noise_truth.labelled_corpora`, a
    one-line DataError when there is none), each scored against its own
    ``noise_labels.csv``; rows of other corpora (AudioSet) are left out. Each dumped row is
    labelled by its own window (``clip_start``, ``clip_end``: streamed clips draw a new window
    every epoch); the corpus index of ``fmt`` (``features.format``) gives its video. A window of
    one epoch's worth of steps covers each triplet once, scored by the model of that moment.
    A YouTube-8M video without captions counts as text-aligned (its ground truth says so; its
    conflict cosine and video-text loss are 0).
    """
    scores = read_scores(run_dir, vt_weight)
    dumped = sorted(set(scores["dataset"].astype(str)))
    names = labelled_corpora(data_root, dumped) if datasets is None else [name for name in datasets if name in dumped]
    if not names and datasets is not None:
        return pd.DataFrame(columns=["dataset", "step", "n"])
    if not names:
        raise DataError(f"{run_dir}: none of the scored corpora ({', '.join(dumped)}) has a ground truth ({layout.NOISE_LABELS})")
    tables = [_corpus_auroc(scores[scores["dataset"] == name].reset_index(drop=True), name, data_root, features_root, window, fmt)
              for name in names]
    return pd.concat(tables, ignore_index=True)


def _corpus_auroc(scores: pd.DataFrame, dataset: str, data_root: Path, features_root: Path, window: int, fmt: str) -> pd.DataFrame:
    index_path = layout.corpus_dir(features_root, dataset, fmt) / layout.FEATURE_INDEX
    if not index_path.is_file():
        raise DataError(f"{index_path}: the {dataset} corpus index is missing (needed to join its scores with {layout.NOISE_LABELS})")
    index = read_parquet(index_path, f"{dataset} corpus index", columns=["item_id", "video_id"])
    rows = scores.assign(row=np.arange(len(scores))).merge(index, on="item_id")
    clips = rows[["row", "video_id", "clip_start", "clip_end"]].rename(columns={"row": "item_id"})
    truth = label_clips(clips, corpus_labels(data_root, dataset)).rename(columns={"item_id": "row"})
    scores = rows.drop(columns=["video_id"]).merge(truth, on="row")
    scores["window"] = scores["step"] // window * window
    out = []
    for start, group in scores.groupby("window"):
        row: dict[str, float | str] = {"dataset": dataset, "step": int(start), "n": len(group)}
        for name, sign in TRAINING_INDICATORS.items():
            for target in TARGETS:
                labels = group[target].to_numpy()
                row[f"{name}/{target}"] = binary_auroc(sign * group[name].to_numpy(dtype=float), labels) if 0 < labels.sum() < len(labels) else np.nan
        out.append(row)
    return pd.DataFrame(out)
