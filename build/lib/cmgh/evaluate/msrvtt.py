"""MSR-VTT zero-shot text-to-video retrieval in the joint video-text space (1k-A style test queries).

Metrics: ``t2v_R@1``, ``t2v_R@5``, ``t2v_R@10``, ``t2v_MedR``, ``t2v_MnR`` and the same with
``v2t_``. One query per test video (the first); query ``i``'s video is item ``i`` of the gallery.

Concept level (``t2v_concept_mAP``, ``t2v_concept_R@1/5/10``): every test video of the query's
``category`` (``videodatainfo.json``) is relevant. The generated MSR-VTT's captions name only their
video's concept and its ``category`` is that concept (up to 20 concepts; above, concepts ``c`` and
``c + 20`` share one), so the instance-level ranks put the right video among its concept's ties and
these metrics are the ones a concept-level model can win. On the real MSR-VTT ``category`` is one of
its 20 broad categories: a coarse relevance, reported beside the instance-level metrics only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmgh import layout
from cmgh.config import Config
from cmgh.data.stream.decoded import TokenizedTexts
from cmgh.errors import DataError
from cmgh.evaluate import TASK_DATASETS
from cmgh.evaluate import embeddings as E
from cmgh.evaluate import metrics as M
from cmgh.evaluate.encoder import Encoder
from cmgh.evaluate.registry import register

log = logging.getLogger(__name__)

DATASET = TASK_DATASETS["msrvtt"]


@register("msrvtt")
def run(cfg: Config, enc: Encoder, out: Path, timer: E.Timer) -> tuple[dict[str, float], dict[str, Any]]:
    ecfg = cfg.evaluate
    features_root = cfg.path("features")
    root = layout.feature_dir(features_root, DATASET)
    queries = TokenizedTexts(root, str(ecfg.msrvtt.queries))
    videos = E.nonempty_split(root, "test", ("video",))
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
    tokens, _ = layout.tokenized_texts(layout.feature_dir(features_root, DATASET), str(ecfg.msrvtt.queries))
    key = E.fingerprint("msrvtt", "vat", str(ecfg.msrvtt.queries), enc.digest, E.index_digest(features_root, DATASET), E.file_digest(tokens))

    def compute() -> dict[str, np.ndarray]:
        v = E.embed(model, videos, lambda b: model.embed_video(b["video"], space="vat"), int(ecfg.batch_size), "msrvtt videos", timer)
        t = E.embed(model, queries, lambda b: model.embed_text(b["text"], space="vat"), int(ecfg.batch_size), "msrvtt queries", timer)
        return {"video": v, "text": t}

    z, hit = E.cached(out / layout.EMBEDDINGS, key, compute)
    with timer.phase("metrics"):
        v = torch.nn.functional.normalize(torch.as_tensor(z["video"][order], dtype=torch.float32), dim=1)
        t = torch.nn.functional.normalize(torch.as_tensor(z["text"][q_rows], dtype=torch.float32), dim=1)
        sim = t @ v.T
        result = {f"t2v_{k}": val for k, val in M.retrieval_metrics(sim).items()}
        result.update({f"v2t_{k}": val for k, val in M.retrieval_metrics(sim[:, : len(q_rows)].T.contiguous()).items()})
        categories = videos.index["category"].to_numpy()[order]
        result.update({f"t2v_{k}": val for k, val in M.concept_retrieval_metrics(sim, categories[: len(q_rows)], categories).items()})
    params = {"n_queries": len(q_rows), "n_videos": len(videos), "queries_dropped": dropped, "space": "vat", "feature_cache_hit": hit}
    return result, params
