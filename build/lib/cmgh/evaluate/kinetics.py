"""Kinetics action classification: a linear probe on frozen video features, or end-to-end fine-tuning.

Metrics (percent): ``top1``, ``top5`` on the test split, ``val_top1`` (the sweep's objective).
Writes :data:`cmgh.layout.PREDICTIONS` (per test clip: label, prediction, top-5, correct) and,
for the linear probe, the embedding cache.
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
from cmgh.data.stream.decoded import ShardedClips, collate, read_index
from cmgh.errors import CmghError
from cmgh.evaluate import TASK_DATASETS
from cmgh.evaluate import embeddings as E
from cmgh.evaluate import metrics as M
from cmgh.evaluate import probe as P
from cmgh.evaluate.encoder import Encoder
from cmgh.evaluate.registry import register
from cmgh.io import atomic_write_text
from cmgh.train.schedule import build_factor_scheduler

DATASET = TASK_DATASETS["kinetics"]
SPLITS = ("train", "val", "test")


@register("kinetics")
def run(cfg: Config, enc: Encoder, out: Path, timer: E.Timer) -> tuple[dict[str, float], dict[str, Any]]:
    ecfg = cfg.evaluate
    root = layout.feature_dir(cfg.path("features"), DATASET)
    index = read_index(root)
    num_classes = int(index["label_index"].max()) + 1
    splits = {s: E.nonempty_split(root, s, ("video",)) for s in SPLITS}
    labels = {s: ds.index["label_index"].to_numpy(dtype=np.int64) for s, ds in splits.items()}
    if ecfg.kinetics.protocol == "finetune":
        return _finetune(cfg, enc, out, splits, labels, num_classes, timer)

    model = enc.model
    key = E.fingerprint("kinetics", "video/rep", enc.digest, E.index_digest(cfg.path("features"), DATASET))

    def compute() -> dict[str, np.ndarray]:
        return {
            s: E.embed(model, ds, lambda b: model.embed_video(b["video"], space="rep"), int(ecfg.batch_size), f"kinetics {s}", timer)
            for s, ds in splits.items()
        }

    x, hit = E.cached(out / layout.EMBEDDINGS, key, compute)
    tick = time.perf_counter()
    scaler = P.Standardizer.fit(x["train"])
    xs = {s: scaler(v) for s, v in x.items()}
    max_iter = int(ecfg.probe_max_iter)

    def top1(logits: np.ndarray, y: np.ndarray) -> float:
        return M.topk_accuracy(logits, y, ks=(1,))["top1"]

    chosen = P.select(
        lambda wd: P.fit_softmax(xs["train"], labels["train"], num_classes, wd, max_iter),
        list(ecfg.kinetics.weight_decays), xs["val"], labels["val"], top1,
    )
    # The selected grid point is refitted on train (the fit is deterministic: this is the same model).
    final = P.fit_softmax(xs["train"], labels["train"], num_classes, chosen.weight_decay, max_iter)
    timer.add("probe", time.perf_counter() - tick)
    with timer.phase("metrics"):
        logits = final.logits(xs["test"])
        result = M.topk_accuracy(logits, labels["test"], ks=(1, 5))
        result["val_top1"] = chosen.val_score
    _write_predictions(out, splits["test"], labels["test"], logits)
    params = {
        "protocol": "linear",
        "weight_decay": chosen.weight_decay,
        "grid": chosen.grid,
        "num_classes": num_classes,
        "n_train": len(splits["train"]),
        "n_val": len(splits["val"]),
        "n_test": len(splits["test"]),
        "feature_dim": int(x["train"].shape[1]),
        "feature_cache_hit": hit,
        "probe_iterations": final.iterations,
    }
    return result, params


def _write_predictions(out: Path, ds: ShardedClips, y: np.ndarray, logits: np.ndarray) -> None:
    order = np.argsort(-logits, axis=1, kind="stable")
    table = pd.DataFrame(
        {
            "item_id": ds.index["item_id"].to_numpy(),
            "label_index": y,
            "pred": order[:, 0],
            "top5": [" ".join(map(str, row[:5])) for row in order],
            "correct": order[:, 0] == y,
        }
    )
    atomic_write_text(out / layout.PREDICTIONS, table.to_csv(index=False))


def _finetune(
    cfg: Config,
    enc: Encoder,
    out: Path,
    splits: dict[str, ShardedClips],
    labels: dict[str, np.ndarray],
    num_classes: int,
    timer: E.Timer,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Video encoder + linear head trained end to end (SGD momentum 0.9, warm-up + half-cosine lr, clipping)."""
    kc = cfg.evaluate.kinetics
    torch.manual_seed(enc.seed)
    model = enc.model
    head = nn.Linear(model.width, num_classes)
    params = [p for p in model.parameters()] + list(head.parameters())
    optimizer = torch.optim.SGD(params, lr=float(kc.finetune_lr), momentum=0.9, weight_decay=float(kc.finetune_weight_decay))
    train = splits["train"]
    bs = min(int(kc.finetune_batch_size), len(train))
    per_epoch = math.ceil(len(train) / bs)
    total = per_epoch * int(kc.finetune_epochs)
    warm = int(round(float(kc.finetune_warmup_epochs) * per_epoch))
    scheduler = build_factor_scheduler(optimizer, warm, total, "half")
    gen = torch.Generator().manual_seed(enc.seed)
    y_train = torch.from_numpy(np.array(labels["train"], dtype=np.int64))
    tick = time.perf_counter()
    model.train()
    for _epoch in range(int(kc.finetune_epochs)):
        order = torch.randperm(len(train), generator=gen)
        for start in range(0, len(train), bs):
            idx = order[start : start + bs].tolist()
            batch = collate([train[i] for i in idx])
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(head(model.embed_video(batch["video"], space="rep")), y_train[idx])
            if not torch.isfinite(loss):
                raise CmghError("kinetics fine-tuning: non-finite loss (lower evaluate.kinetics.finetune_lr)")
            loss.backward()
            if float(kc.finetune_grad_clip) > 0:
                torch.nn.utils.clip_grad_norm_(params, float(kc.finetune_grad_clip))
            optimizer.step()
            scheduler.step()
    model.eval()
    timer.add("finetune", time.perf_counter() - tick)

    def logits_of(split: str) -> np.ndarray:
        return E.embed(model, splits[split], lambda b: head(model.embed_video(b["video"], space="rep")), int(cfg.evaluate.batch_size), f"kinetics {split}", timer)

    test_logits, val_logits = logits_of("test"), logits_of("val")
    with timer.phase("metrics"):
        result = M.topk_accuracy(test_logits, labels["test"], ks=(1, 5))
        result["val_top1"] = M.topk_accuracy(val_logits, labels["val"], ks=(1,))["top1"]
    _write_predictions(out, splits["test"], labels["test"], test_logits)
    info = {
        "protocol": "finetune",
        "lr": float(kc.finetune_lr),
        "epochs": int(kc.finetune_epochs),
        "batch_size": bs,
        "steps": total,
        "weight_decay": float(kc.finetune_weight_decay),
        "num_classes": num_classes,
        "n_train": len(train),
        "n_val": len(splits["val"]),
        "n_test": len(splits["test"]),
        "final_train_loss": float(loss.detach()),
    }
    return result, info
