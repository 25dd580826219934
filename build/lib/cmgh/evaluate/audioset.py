"""AudioSet audio tagging: a multi-label linear probe on frozen audio features.

Metrics: ``mAP``, ``mAUC``, ``d_prime`` on the eval split, ``val_mAP`` on a held-out part of
train (a fixed permutation of the item ids, the same for every checkpoint). The segments that
extraction left out (missing, corrupt, no known label, invalid id: the feature manifest) and the
clips without an audio stream (``ok: no audio stream``: silence would be scored against their
labels) are counted in ``params.left_out`` and named in a warning, so a score over fewer segments
says so.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmgh import layout
from cmgh.config import Config
from cmgh.data.datasets import audioset
from cmgh.data.extract import shards
from cmgh.errors import DataError
from cmgh.evaluate import TASK_DATASETS
from cmgh.evaluate import embeddings as E
from cmgh.evaluate import metrics as M
from cmgh.evaluate import probe as P
from cmgh.evaluate.encoder import Encoder
from cmgh.evaluate.registry import register

log = logging.getLogger(__name__)
DATASET = TASK_DATASETS["audioset"]
SPLIT_SEED = 0  # the held-out validation part of train


def with_audio(index: pd.DataFrame) -> pd.Series:
    """The index rows whose file has an audio stream (an index extracted before ``has_audio``: all)."""
    return index["has_audio"].astype(bool) if "has_audio" in index.columns else pd.Series(True, index=index.index)


def _multi_hot(lists: pd.Series, num_classes: int) -> np.ndarray:
    y = np.zeros((len(lists), num_classes), dtype=np.float32)
    for i, labels in enumerate(lists):
        for c in np.asarray(labels, dtype=np.int64).ravel():
            if not 0 <= c < num_classes:
                raise DataError(f"audioset index: label {c} outside [0, {num_classes}) ({layout.AUDIOSET_CLASSES})")
            y[i, c] = 1.0
    return y


@register("audioset")
def run(cfg: Config, enc: Encoder, out: Path, timer: E.Timer) -> tuple[dict[str, float], dict[str, Any]]:
    ecfg = cfg.evaluate
    root = layout.feature_dir(cfg.path("features"), DATASET)
    num_classes = len(audioset.read_audioset_classes(layout.audioset_classes(cfg.path("data"))))
    train_all, test = (E.nonempty_split(root, split, ("audio",), where=with_audio) for split in ("train", "eval"))
    left_out = shards.left_out(root, also=(shards.NO_AUDIO,))
    if left_out:
        log.warning("audioset: segments left out of the evaluation: %d (%s; see %s)", sum(left_out.values()),
                    shards.describe(left_out), root / layout.FEATURE_MANIFEST)
    model = enc.model
    key = E.fingerprint("audioset", "audio/rep", enc.digest, E.index_digest(cfg.path("features"), DATASET))

    def compute() -> dict[str, np.ndarray]:
        return {
            s: E.embed(model, ds, lambda b: model.embed_audio(b["audio"], space="rep"), int(ecfg.batch_size), f"audioset {s}", timer)
            for s, ds in (("train", train_all), ("eval", test))
        }

    x, hit = E.cached(out / layout.EMBEDDINGS, key, compute)
    y_all = _multi_hot(train_all.index["labels"], num_classes)
    y_test = _multi_hot(test.index["labels"], num_classes)
    ids = train_all.index["item_id"].to_numpy()
    perm = np.random.default_rng(SPLIT_SEED).permutation(np.argsort(ids, kind="stable"))
    n_val = min(len(ids) - 1, max(1, int(round(float(ecfg.audioset.val_fraction) * len(ids)))))
    if n_val < 1:
        raise DataError(f"{root}: the train split has {len(ids)} clip(s); at least 2 are needed to hold out a validation part")
    val_rows, fit_rows = np.sort(perm[:n_val]), np.sort(perm[n_val:])

    tick = time.perf_counter()
    scaler = P.Standardizer.fit(x["train"][fit_rows])
    x_fit, x_val, x_test = scaler(x["train"][fit_rows]), scaler(x["train"][val_rows]), scaler(x["eval"])
    max_iter = int(ecfg.probe_max_iter)
    chosen = P.select(
        lambda wd: P.fit_multilabel(x_fit, y_all[fit_rows], wd, max_iter),
        list(ecfg.audioset.weight_decays), x_val, y_all[val_rows], M.mean_average_precision,
    )
    final = P.fit_multilabel(x_fit, y_all[fit_rows], chosen.weight_decay, max_iter)
    timer.add("probe", time.perf_counter() - tick)
    with timer.phase("metrics"):
        scores = final.logits(x_test)
        m_ap, m_auc = M.mean_average_precision(scores, y_test), M.mean_auc(scores, y_test)
        result = {"mAP": m_ap, "mAUC": m_auc, "d_prime": M.d_prime(m_auc), "val_mAP": chosen.val_score}
    params = {
        "weight_decay": chosen.weight_decay,
        "grid": chosen.grid,
        "num_classes": num_classes,
        "n_fit": len(fit_rows),
        "n_val": len(val_rows),
        "n_eval": len(test),
        "left_out": sum(left_out.values()),
        "left_out_statuses": left_out,
        "classes_with_eval_positives": int((y_test.sum(0) > 0).sum()),
        "feature_dim": int(x["train"].shape[1]),
        "feature_cache_hit": hit,
    }
    return result, params
