"""The four evaluations of a pre-trained encoder, each compared against its random initialization.

``evaluate(cfg, task, checkpoint_dir, out_dir, random_init=False)`` runs one task and writes, in
``out_dir`` (by convention ``results/eval/{task}/{backbone}/{variant}/seed{seed}/``):

* ``metrics.json`` - flat numeric metrics at the top level (below), plus ``meta`` (task,
  backbone, variant, seed, checkpoint and its SHA-256, random_init), ``params`` (chosen
  hyperparameters, split sizes) and ``timing`` (seconds in encoder forward passes, probe
  fitting and metric computation). Non-finite values are written as ``null``.
* ``config.yaml`` - the resolved evaluation config (the model and pretrain sections are the
  checkpoint's own).
* task extras: ``features.npz`` (cached frozen features), ``predictions.csv`` (kinetics),
  ``scores.csv`` + ``roc.csv`` (noise).

Metric keys:

* ``kinetics``: ``top1``, ``top5`` (percent, test split), ``val_top1``.
* ``audioset``: ``mAP``, ``mAUC``, ``d_prime`` (eval split), ``val_mAP``.
* ``msrvtt``: ``t2v_R@1``, ``t2v_R@5``, ``t2v_R@10``, ``t2v_MedR``, ``t2v_MnR`` and the same with
  ``v2t_``.
* ``noise``: ``auroc/<indicator>/<target>`` and ``ap/<indicator>/<target>`` for indicators
  :data:`NOISE_INDICATORS` and targets ``audio``, ``text``, ``either``; ``noise_rate_audio``,
  ``noise_rate_text``, ``noise_rate_either``.

The random-init baseline (``random_init=True``) is ``build_model`` with the checkpoint's config
and ``torch.manual_seed(seed)``: exactly the weights pre-training started from.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from cmgh import config as config_mod
from cmgh.config import Config
from cmgh.data import formats
from cmgh.data.datasets import ShardedClips, TokenizedTexts, collate, read_index
from cmgh.data.features import feature_dir
from cmgh.errors import CmghError, DataError
from cmgh.evaluate import features as feats
from cmgh.evaluate import metrics as M
from cmgh.evaluate import probe as P
from cmgh.io import atomic_write_json, atomic_write_text
from cmgh.models import build_model
from cmgh.track import NullTracker, Tracker
from cmgh import checkpoint as ckpt

log = logging.getLogger(__name__)

TASKS = ("kinetics", "audioset", "msrvtt", "noise")
RANDOM_VARIANT = "random"
# Indicator -> sign: score = sign * value, higher score = flagged as noisier.
NOISE_INDICATORS: dict[str, float] = {
    "cos_representation": -1.0,
    "cos_representation_exact": -1.0,
    "cos_parameters": -1.0,
    "loss_va": 1.0,
    "loss_vt": 1.0,
    "loss_total": 1.0,
}
NOISE_TARGETS = ("audio", "text", "either")
AUDIOSET_SPLIT_SEED = 0


# --------------------------------------------------------------------------- the encoder


class Encoder:
    """A checkpoint's model (or its random initialization) with everything needed to name its outputs."""

    def __init__(self, cfg: Config, checkpoint_dir: str | Path, random_init: bool = False) -> None:
        directory = Path(checkpoint_dir)
        path = ckpt.latest(directory) if directory.is_dir() or not directory.suffix else directory
        directory = path.parent
        state = ckpt.load(path)
        if "model" not in state or "meta" not in state:
            raise DataError(f"{path}: not a cmgh pre-training checkpoint (expected 'model' and 'meta')")
        meta = dict(state["meta"])
        self.backbone, self.seed = str(meta["backbone"]), int(meta["seed"])
        self.pretrained_variant = str(meta["variant"])
        self.variant = RANDOM_VARIANT if random_init else self.pretrained_variant
        self.random_init = random_init
        self.path = path
        run_cfg_path = directory / "config.yaml"
        if run_cfg_path.is_file():
            run = config_mod.load(run_cfg_path).to_dict()
            tree = config_mod.deep_merge(cfg.to_dict(), {"model": run["model"], "pretrain": run["pretrain"]})
            self.cfg = config_mod.from_dict(tree)
        else:
            log.warning("%s: no config.yaml beside the checkpoint; using the given config's model section", directory)
            self.cfg = config_mod.for_variant(cfg, self.pretrained_variant) if self.pretrained_variant in cfg.variants else cfg
        torch.manual_seed(self.seed)
        model = build_model(self.cfg, self.backbone, vocab_size=int(meta["vocab_size"]))
        if not random_init:
            try:
                model.load_state_dict(state["model"])
            except RuntimeError as exc:
                raise DataError(f"{path}: weights do not fit the model of its config.yaml ({str(exc).splitlines()[0][:200]})") from None
            self.digest = feats.file_digest(path)
        else:
            self.digest = feats.fingerprint("random", self.seed, self.backbone, int(meta["vocab_size"]), self.cfg.to_dict()["model"])
        self.model = model.eval()
        self.meta = {
            "backbone": self.backbone,
            "variant": self.variant,
            "pretrained_variant": self.pretrained_variant,
            "seed": self.seed,
            "random_init": random_init,
            "checkpoint": str(path),
            "checkpoint_sha256": self.digest,
            "pretrain_steps": int(meta.get("steps", 0)),
        }

    def default_out(self, cfg: Config, task: str) -> Path:
        return cfg.path("results") / "eval" / task / self.backbone / self.variant / f"seed{self.seed}"


def default_out_dir(cfg: Config, task: str, checkpoint_dir: str | Path, random_init: bool = False) -> Path:
    """``<results>/eval/{task}/{backbone}/{variant}/seed{seed}`` from the checkpoint's meta."""
    state = ckpt.load(Path(checkpoint_dir))
    meta = state.get("meta") or {}
    try:
        variant = RANDOM_VARIANT if random_init else meta["variant"]
        return cfg.path("results") / "eval" / task / str(meta["backbone"]) / str(variant) / f"seed{int(meta['seed'])}"
    except KeyError as exc:
        raise DataError(f"{checkpoint_dir}: checkpoint meta lacks {exc}") from None


# --------------------------------------------------------------------------- helpers


def _index_digest(root: Path) -> str:
    path = root / "index.parquet"
    if not path.is_file():
        raise DataError(f"{path}: feature index not found (run `cmgh data extract` for this dataset)")
    return feats.file_digest(path)


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats -> None, numpy scalars -> Python."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _split(root: Path, split: str, modalities: tuple[str, ...]) -> ShardedClips:
    ds = ShardedClips(root, split=split, modalities=modalities)
    if len(ds) == 0:
        raise DataError(f"{root}: split {split!r} has no extracted clips")
    return ds


# --------------------------------------------------------------------------- kinetics


def _kinetics(cfg: Config, enc: Encoder, out: Path, timer: feats.Timer) -> tuple[dict[str, float], dict[str, Any]]:
    ecfg = cfg.evaluate
    root = feature_dir(cfg, "kinetics")
    index = read_index(root)
    num_classes = int(index["label_index"].max()) + 1
    splits = {s: _split(root, s, ("video",)) for s in ("train", "val", "test")}
    labels = {s: ds.index["label_index"].to_numpy(dtype=np.int64) for s, ds in splits.items()}
    if ecfg.kinetics.protocol == "finetune":
        return _kinetics_finetune(cfg, enc, out, splits, labels, num_classes, timer)

    model = enc.model
    key = feats.fingerprint("kinetics", "video/rep", enc.digest, _index_digest(root))

    def compute() -> dict[str, np.ndarray]:
        return {
            s: feats.embed(model, ds, lambda b: model.embed_video(b["video"], space="rep"), int(ecfg.batch_size), f"kinetics {s}", timer)
            for s, ds in splits.items()
        }

    x, hit = feats.cached(out / feats.CACHE_FILE, key, compute)
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
    atomic_write_text(out / "predictions.csv", table.to_csv(index=False))


def _kinetics_finetune(
    cfg: Config,
    enc: Encoder,
    out: Path,
    splits: dict[str, ShardedClips],
    labels: dict[str, np.ndarray],
    num_classes: int,
    timer: feats.Timer,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Video encoder + linear head trained end to end (SGD momentum 0.9, warm-up + cosine lr, clipping)."""
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

    def lr_factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
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
        return feats.embed(model, splits[split], lambda b: head(model.embed_video(b["video"], space="rep")), int(cfg.evaluate.batch_size), f"kinetics {split}", timer)

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


# --------------------------------------------------------------------------- audioset


def _multi_hot(lists: pd.Series, num_classes: int) -> np.ndarray:
    y = np.zeros((len(lists), num_classes), dtype=np.float32)
    for i, labels in enumerate(lists):
        for c in np.asarray(labels, dtype=np.int64).ravel():
            if not 0 <= c < num_classes:
                raise DataError(f"audioset index: label {c} outside [0, {num_classes}) (class_labels_indices.csv)")
            y[i, c] = 1.0
    return y


def _audioset(cfg: Config, enc: Encoder, out: Path, timer: feats.Timer) -> tuple[dict[str, float], dict[str, Any]]:
    ecfg = cfg.evaluate
    root = feature_dir(cfg, "audioset")
    num_classes = len(formats.read_audioset_classes(cfg.path("data") / "audioset" / "class_labels_indices.csv"))
    train_all, test = _split(root, "train", ("audio",)), _split(root, "eval", ("audio",))
    model = enc.model
    key = feats.fingerprint("audioset", "audio/rep", enc.digest, _index_digest(root))

    def compute() -> dict[str, np.ndarray]:
        return {
            s: feats.embed(model, ds, lambda b: model.embed_audio(b["audio"], space="rep"), int(ecfg.batch_size), f"audioset {s}", timer)
            for s, ds in (("train", train_all), ("eval", test))
        }

    x, hit = feats.cached(out / feats.CACHE_FILE, key, compute)
    y_all = _multi_hot(train_all.index["labels"], num_classes)
    y_test = _multi_hot(test.index["labels"], num_classes)
    # Deterministic held-out part of train: a fixed permutation of the item ids (same for every checkpoint).
    ids = train_all.index["item_id"].to_numpy()
    perm = np.random.default_rng(AUDIOSET_SPLIT_SEED).permutation(np.argsort(ids, kind="stable"))
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
        "classes_with_eval_positives": int((y_test.sum(0) > 0).sum()),
        "feature_dim": int(x["train"].shape[1]),
        "feature_cache_hit": hit,
    }
    return result, params


# --------------------------------------------------------------------------- msr-vtt


def _msrvtt(cfg: Config, enc: Encoder, out: Path, timer: feats.Timer) -> tuple[dict[str, float], dict[str, Any]]:
    ecfg = cfg.evaluate
    root = feature_dir(cfg, "msrvtt")
    queries = TokenizedTexts(root, str(ecfg.msrvtt.queries))
    videos = _split(root, "test", ("video",))
    position = {vid: i for i, vid in enumerate(videos.index["video_id"].astype(str))}
    q_vids = queries.table["video_id"].astype(str)
    keep = q_vids.isin(position) & ~q_vids.duplicated()
    dropped = int((~keep).sum())
    if dropped:
        log.warning("msrvtt: %d queries dropped (video not extracted or a second query of the same video)", dropped)
    q_rows = np.flatnonzero(keep.to_numpy())
    if len(q_rows) == 0:
        raise DataError(f"{root}: no {ecfg.msrvtt.queries} query matches an extracted test video")
    matched = [position[v] for v in q_vids.iloc[q_rows]]
    order = matched + sorted(set(range(len(videos))) - set(matched))  # query i's video is item i
    model = enc.model
    key = feats.fingerprint("msrvtt", "vat", str(ecfg.msrvtt.queries), enc.digest, _index_digest(root), feats.file_digest(root / f"{ecfg.msrvtt.queries}.npy"))

    def compute() -> dict[str, np.ndarray]:
        v = feats.embed(model, videos, lambda b: model.embed_video(b["video"], space="vat"), int(ecfg.batch_size), "msrvtt videos", timer)
        t = feats.embed(model, queries, lambda b: model.embed_text(b["text"], space="vat"), int(ecfg.batch_size), "msrvtt queries", timer)
        return {"video": v, "text": t}

    z, hit = feats.cached(out / feats.CACHE_FILE, key, compute)
    with timer.phase("metrics"):
        v = torch.nn.functional.normalize(torch.as_tensor(z["video"][order], dtype=torch.float32), dim=1)
        t = torch.nn.functional.normalize(torch.as_tensor(z["text"][q_rows], dtype=torch.float32), dim=1)
        sim = t @ v.T
        result = {f"t2v_{k}": val for k, val in M.retrieval_metrics(sim).items()}
        result.update({f"v2t_{k}": val for k, val in M.retrieval_metrics(sim[:, : len(q_rows)].T.contiguous()).items()})
    params = {"n_queries": len(q_rows), "n_videos": len(videos), "queries_dropped": dropped, "space": "vat", "feature_cache_hit": hit}
    return result, params


# --------------------------------------------------------------------------- noise detection


def noise_truth(cfg: Config, index: pd.DataFrame) -> pd.DataFrame:
    """Per clip: ``item_id, audio, text, either`` (1 = misaligned), joined on video_id and clip_start (within 1e-3 s)."""
    labels = formats.read_noise_labels(cfg.path("data") / "howto100m" / "noise_labels.csv")
    merged = index[["item_id", "video_id", "clip_start"]].merge(labels, on="video_id", suffixes=("", "_gt"))
    merged = merged[(merged["clip_start"] - merged["clip_start_gt"]).abs() < 1e-3].drop_duplicates("item_id")
    if merged.empty:
        raise DataError("noise_labels.csv matches no extracted pre-training clip (expected the same video_id and clip_start)")
    truth = merged[["item_id"]].copy()
    truth["audio"] = 1 - merged["audio_aligned"].astype(int).to_numpy()
    truth["text"] = 1 - merged["text_aligned"].astype(int).to_numpy()
    truth["either"] = truth[["audio", "text"]].max(axis=1)
    return truth


def noise_scores(model: nn.Module, cfg: Config, dataset: ShardedClips, timer: feats.Timer | None = None) -> pd.DataFrame:
    """Per-triplet indicators over the whole corpus, in fixed batches of ``evaluate.noise.batch_size``.

    Batches are consecutive chunks (near-equal sizes) of a fixed permutation of the index, so each
    triplet's contrastive negatives are the same for every checkpoint evaluated.
    """
    from cmgh.harmonize import conflict_cosine, forward_losses, objective_cotangents, parameter_gradients, per_sample_gradients

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
        fwd = forward_losses(model, batch, temperature, hidden_blocks=blocks)
        c_va, c_vt = objective_cotangents(fwd.valid_vt, vt_weight)
        g_va, g_vt = per_sample_gradients(fwd.l_va, fwd.l_vt, fwd.meet, c_va, c_vt)
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
                    "loss_va": l_va.numpy(),
                    "loss_vt": l_vt.numpy(),
                    "loss_total": (l_va + vt_weight * l_vt).numpy(),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def _noise(cfg: Config, enc: Encoder, out: Path, timer: feats.Timer) -> tuple[dict[str, float], dict[str, Any]]:
    root = feature_dir(cfg, "howto100m")
    dataset = ShardedClips(root, modalities=("video", "audio", "text"))
    truth = noise_truth(cfg, dataset.index)
    scores = noise_scores(enc.model, enc.cfg, dataset, timer)
    table = dataset.index[["item_id", "video_id", "clip_start", "clip_end"]].merge(scores, on="item_id").merge(truth, on="item_id", how="left")
    labeled = table.dropna(subset=list(NOISE_TARGETS))
    result: dict[str, float] = {}
    curves = []
    with timer.phase("metrics"):
        for target in NOISE_TARGETS:
            y = np.array(labeled[target], dtype=np.int64)
            result[f"noise_rate_{target}"] = float(y.mean()) if len(y) else math.nan
            for name, sign in NOISE_INDICATORS.items():
                s = sign * np.array(labeled[name], dtype=np.float64)
                result[f"auroc/{name}/{target}"] = M.binary_auroc(s, y)
                result[f"ap/{name}/{target}"] = M.average_precision(s, y)
                fpr, tpr, thr = M.roc_curve(s, y)
                curves.append(pd.DataFrame({"indicator": name, "target": target, "fpr": fpr, "tpr": tpr, "threshold": thr}))
    atomic_write_text(out / "scores.csv", table.to_csv(index=False))
    atomic_write_text(out / "roc.csv", pd.concat(curves, ignore_index=True).to_csv(index=False))
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


# --------------------------------------------------------------------------- entry point

_RUNNERS = {"kinetics": _kinetics, "audioset": _audioset, "msrvtt": _msrvtt, "noise": _noise}


def evaluate(
    cfg: Config,
    task: str,
    checkpoint_dir: str | Path,
    out_dir: str | Path | None = None,
    random_init: bool = False,
    tracker: Tracker | None = None,
) -> dict[str, Any]:
    """Run ``task`` on the checkpoint in ``checkpoint_dir`` (or its random init); returns what metrics.json holds."""
    if task not in _RUNNERS:
        raise CmghError(f"unknown evaluation task {task!r} (expected one of {', '.join(TASKS)})")
    tracker = tracker or NullTracker()
    enc = Encoder(cfg, checkpoint_dir, random_init)
    out = Path(out_dir) if out_dir is not None else enc.default_out(cfg, task)
    out.mkdir(parents=True, exist_ok=True)
    ecfg = enc.cfg  # the evaluation config: the given tree + the checkpoint's model/pretrain sections
    ecfg.write(out)
    timer = feats.Timer()
    start = time.perf_counter()
    with torch.random.fork_rng():
        result, params = _RUNNERS[task](ecfg, enc, out, timer)
    timing = {**{f"{k}_s": v for k, v in timer.seconds.items()}, "total_s": time.perf_counter() - start}
    meta = {"task": task, **enc.meta}
    payload = _clean({**result, "meta": meta, "params": params, "timing": timing})
    atomic_write_json(out / "metrics.json", payload)
    tags = {k: str(v) for k, v in meta.items() if k != "checkpoint_sha256"}
    tracker.set_tags({"stage": "evaluate", **tags})
    tracker.log_params({f"eval.{k}": v for k, v in params.items() if not isinstance(v, (list, dict))})
    tracker.log_metrics({f"{task}/{k}": float(v) for k, v in result.items() if v is not None and math.isfinite(float(v))})
    log.info("evaluate %s %s/%s/seed%d -> %s", task, enc.backbone, enc.variant, enc.seed, out)
    return payload
