"""Noise detection with the final checkpoint: how well each per-triplet indicator flags misaligned triplets.

Metrics: ``auroc/<indicator>/<target>`` and ``ap/<indicator>/<target>`` for the indicators
:data:`~cmgh.evaluate.NOISE_INDICATORS` and targets ``audio``, ``text``, ``either``;
``noise_rate_<target>``. Writes :data:`cmgh.layout.NOISE_SCORES` (per triplet: indicators and
ground truth) and :data:`cmgh.layout.NOISE_ROC` (the ROC curves).

Scores HowTo100M's decoded windows only (``TASK_DATASETS["noise"]``): the task's numbers stay
comparable across runs whatever corpora they mixed. YouTube-8M's ground truth is scored over
training instead (:mod:`cmgh.evaluate.detection_over_training`, a row per corpus).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from cmgh import layout
from cmgh.config import Config
from cmgh.data.stream.decoded import ShardedClips, collate
from cmgh.errors import DataError
from cmgh.evaluate import NOISE_INDICATORS, TARGETS, TASK_DATASETS
from cmgh.evaluate import metrics as M
from cmgh.evaluate.embeddings import Timer
from cmgh.evaluate.encoder import Encoder
from cmgh.evaluate.noise_truth import clip_truth, loss_total
from cmgh.evaluate.registry import register
from cmgh.io import atomic_write_text

DATASET = TASK_DATASETS["noise"]


def noise_scores(model: nn.Module, cfg: Config, dataset: ShardedClips, timer: Timer | None = None) -> pd.DataFrame:
    """Per-triplet indicators over the whole corpus, in fixed batches of ``evaluate.noise.batch_size``.

    Batches are consecutive chunks (near-equal sizes) of a fixed permutation of the index, so each
    triplet's contrastive negatives are the same for every checkpoint evaluated.
    """
    from cmgh.harmonize import conflict_cosine, forward_losses, objective_cotangents, parameter_gradients, per_sample_gradients
    from cmgh.harmonize.ghost import GhostGram

    ncfg = cfg.evaluate.noise
    n = len(dataset)
    if n < 2:
        raise DataError("noise detection needs at least 2 pre-training clips")
    order = np.random.default_rng(int(ncfg.order_seed)).permutation(n)
    chunks = np.array_split(order, max(1, math.ceil(n / int(ncfg.batch_size))))
    temperature, vt_weight = float(cfg.pretrain.temperature), float(cfg.pretrain.vt_weight)
    blocks = int(ncfg.parameter_blocks)
    model.eval()
    tail = model.video_tail(blocks)
    rows = []
    for idx in chunks:
        batch = collate([dataset[int(i)] for i in idx])
        tick = time.perf_counter()
        ghost = GhostGram(model)
        with ghost.recording(len(idx)):
            fwd = forward_losses(model, batch, temperature, hidden_blocks=blocks, detach=ghost.meeting_keys)
        c_va, c_vt = objective_cotangents(fwd.valid_vt, vt_weight, valid_va=fwd.valid_va)
        g_va, g_vt, whole = ghost.measure(fwd.l_va, fwd.l_vt, fwd.cut, c_va, c_vt, last=True)  # g_*: at the representation
        cos_all = whole.cosine()
        ghost.release()
        e_va, e_vt = per_sample_gradients(fwd.l_va, fwd.l_vt, fwd.meet, c_va, c_vt, exact=True)
        assert fwd.hidden is not None
        p_va, p_vt = parameter_gradients(tail, fwd.hidden, [g_va, g_vt])
        if timer is not None:
            timer.add("forward", time.perf_counter() - tick)
        valid = fwd.valid_vt.detach()
        zero = torch.zeros(len(idx))
        l_va, l_vt = fwd.l_va.detach(), fwd.l_vt.detach()
        rows.append(
            pd.DataFrame(
                {
                    "item_id": dataset.index["item_id"].iloc[idx].to_numpy(),
                    "batch": len(rows),
                    "has_text": valid.numpy(),
                    "cos_representation": torch.where(valid, conflict_cosine(g_va, g_vt).detach(), zero).numpy(),
                    "cos_representation_exact": torch.where(valid, conflict_cosine(e_va, e_vt).detach(), zero).numpy(),
                    "cos_parameters": torch.where(valid, conflict_cosine(p_va, p_vt).detach(), zero).numpy(),
                    "cos_all_parameters": torch.where(valid, cos_all.detach(), zero).numpy(),
                    "loss_va": l_va.numpy(),
                    "loss_vt": l_vt.numpy(),
                    "loss_total": loss_total(l_va, l_vt, vt_weight).numpy(),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


@register("noise")
def run(cfg: Config, enc: Encoder, out: Path, timer: Timer) -> tuple[dict[str, float], dict[str, Any]]:
    dataset = ShardedClips(layout.feature_dir(cfg.path("features"), DATASET), modalities=("video", "audio", "text"))
    truth = clip_truth(cfg.path("data"), dataset.index)
    scores = noise_scores(enc.model, enc.cfg, dataset, timer)
    table = dataset.index[["item_id", "video_id", "clip_start", "clip_end"]].merge(scores, on="item_id").merge(truth, on="item_id", how="left")
    labeled = table.dropna(subset=list(TARGETS))
    result: dict[str, float] = {}
    curves = []
    with timer.phase("metrics"):
        for target in TARGETS:
            y = np.array(labeled[target], dtype=np.int64)
            result[f"noise_rate_{target}"] = float(y.mean()) if len(y) else math.nan
            for name, sign in NOISE_INDICATORS.items():
                s = sign * np.array(labeled[name], dtype=np.float64)
                result[f"auroc/{name}/{target}"] = M.binary_auroc(s, y)
                result[f"ap/{name}/{target}"] = M.average_precision(s, y)
                fpr, tpr, thr = M.roc_curve(s, y)
                curves.append(pd.DataFrame({"indicator": name, "target": target, "fpr": fpr, "tpr": tpr, "threshold": thr}))
    atomic_write_text(out / layout.NOISE_SCORES, table.to_csv(index=False))
    atomic_write_text(out / layout.NOISE_ROC, pd.concat(curves, ignore_index=True).to_csv(index=False))
    params = {
        "n_triplets": len(table),
        "n_labeled": len(labeled),
        "n_with_text": int(table["has_text"].sum()),
        "batch_size": int(cfg.evaluate.noise.batch_size),
        "order_seed": int(cfg.evaluate.noise.order_seed),
        "parameter_blocks": int(cfg.evaluate.noise.parameter_blocks),
        "indicators": {k: ("-value" if v < 0 else "+value") for k, v in NOISE_INDICATORS.items()},
    }
    return result, params
