"""The encoder an evaluation scores: a pre-training checkpoint's model, or its random initialization.

The random-init baseline is ``build_model`` with the checkpoint's config and
``torch.manual_seed(seed)``: exactly the weights pre-training started from. The evaluation config
is the given tree with the checkpoint's own ``model`` and ``pretrain`` sections (from the
``config.yaml`` beside it), so a task reads the architecture and the pre-training objective
(temperature, vt_weight) the weights were trained with; an override of those sections cannot
apply, so :func:`cmgh.evaluate.overrides.check_overrides` refuses it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cmgh import checkpoint as ckpt
from cmgh import layout
from cmgh.config import Config
from cmgh.errors import DataError
from cmgh.evaluate import embeddings
from cmgh.evaluate.overrides import evaluation_config, run_folder
from cmgh.models import build_model


class Encoder:
    """A checkpoint's model (or its random initialization) with everything needed to name its outputs."""

    def __init__(self, cfg: Config, checkpoint_dir: str | Path, random_init: bool = False) -> None:
        given = Path(checkpoint_dir)
        directory = run_folder(given)
        path = ckpt.latest(directory) if directory == given else given
        state = ckpt.load(path)
        if "model" not in state or "meta" not in state:
            raise DataError(f"{path}: not a cmgh pre-training checkpoint (expected 'model' and 'meta')")
        meta = dict(state["meta"])
        self.backbone, self.seed = str(meta["backbone"]), int(meta["seed"])
        self.pretrained_variant = str(meta["variant"])
        self.variant = layout.RANDOM_VARIANT if random_init else self.pretrained_variant
        self.random_init = random_init
        self.path = path
        self.cfg = evaluation_config(cfg, directory, self.pretrained_variant)
        torch.manual_seed(self.seed)
        model = build_model(self.cfg, self.backbone, vocab_size=int(meta["vocab_size"]))
        if not random_init:
            try:
                model.load_state_dict(state["model"])
            except RuntimeError as exc:
                raise DataError(f"{path}: weights do not fit the model of its config.yaml ({str(exc).splitlines()[0][:200]})") from None
            self.digest = embeddings.file_digest(path)
        else:
            self.digest = embeddings.fingerprint("random", self.seed, self.backbone, int(meta["vocab_size"]), self.cfg.to_dict()["model"])
        self.model = model.eval()
        self.meta: dict[str, Any] = {
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
        """``<results>/eval/{task}/{backbone}/{variant}/seed{seed}`` (the variant is ``random`` for the init)."""
        return layout.eval_dir(cfg.path("results"), task, self.backbone, self.variant, self.seed)
