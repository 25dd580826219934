"""A tiny VATT (width 16, two blocks) and a ragged batch for it: the model and data of the gradient
tests, and of the training step's."""

from __future__ import annotations

import torch

from cmgh.harmonize import Harmonizer
from cmgh.models import VATT, ModelInputs, ModelSpec
from cmgh.train.step import train_step
from tests import helpers

CFG = {"width": 16, "depth": 2, "heads": 2, "video_patch": [4, 16, 16], "audio_patch": 1000, "va_dim": 12, "vat_dim": 8,
       "text_embed_dim": 8}
TAU = 0.1


def make_batch(b: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Captions of 6 tokens (4 words, vocabulary 50), some dropped, clips 1 and 4 uncaptioned."""
    return helpers.make_batch(b, 3, 6, seed, vocab=50, words=4, ragged=True)


def make_model(backbone: str = "ms", seed: int = 0) -> VATT:
    torch.manual_seed(seed)
    return VATT(ModelSpec.from_config(CFG), backbone, ModelInputs.from_config({"text": {"max_tokens": 6}}, vocab_size=50))


def step_grads(model: VATT, batch: dict, harmonizer: Harmonizer, step: int = 0) -> tuple[dict[str, torch.Tensor], object]:
    """One trainer step at learning rate 0: the gradients it leaves in ``.grad`` and its statistics."""
    result = train_step(model, batch, torch.optim.SGD(model.parameters(), lr=0.0), None, harmonizer, step=step, temperature=TAU)
    stats = result.stats
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, stats
