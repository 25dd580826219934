"""Set-up of one pre-training run: everything the loop steps, built from the config in a fixed order.

The order matters: seeding, then the batch stream and the model (whose initialization draws
from the seeded generator), so that the same config and seed give the same run, bit for bit.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from cmgh import config as config_mod
from cmgh import layout
from cmgh.config import Config
from cmgh.data.stream.decoded import Sample
from cmgh.data import datasets
from cmgh.data.extract.decoded import vocab_path
from cmgh.data.stream.decoded import DecodedSource
from cmgh.data.stream.mixing import StreamPosition
from cmgh.data.stream.packed import PackedSource
from cmgh.data.stream.pretrain import PretrainStream, Source
from cmgh.errors import DataError
from cmgh.data.extract.text import Vocabulary
from cmgh.data.datasets import noise_labels
from cmgh.data.datasets.noise_labels import ClipTruth
from cmgh.harmonize import Harmonizer
from cmgh.harmonize.curriculum import Curriculum
from cmgh.harmonize.truth import missing_truth
from cmgh.models import build_model
from cmgh.train import distributed
from cmgh.train.compile import compile_model
from cmgh.train.schedule import build_scheduler


@dataclass(frozen=True)
class RunSpec:
    backbone: str
    variant: str
    seed: int
    out: Path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def needs_truth(cfg: Config) -> bool:
    """Whether the run's curriculum scores with the generator's ground truth (the ``oracle`` and
    ``quality`` controls): then, and only then, its stream carries the flags."""
    return Curriculum.from_config(cfg.to_dict()["pretrain"]).needs_truth


def corpus_truths(cfg: Config, names: list[str]) -> dict[str, ClipTruth]:
    """The ground truth of each of ``names`` that has one (read for the oracle control only); a run
    none of whose corpora has one is refused in one line."""
    labelled = noise_labels.labelled_corpora(cfg.path("data"), names)
    if not labelled:
        raise missing_truth(str(cfg.pretrain.curriculum.scorer), names)
    return {name: ClipTruth(noise_labels.corpus_labels(cfg.path("data"), name)) for name in labelled}


def corpus_sources(cfg: Config, vocab: Vocabulary, truth: bool = False) -> list[tuple[str, float, Source]]:
    """``pretrain.corpora`` as stream sources in ``features.format``, each with its weight: HowTo100M
    and YouTube-8M triplets, AudioSet video-audio pairs. A sample without text (AudioSet, a
    YouTube-8M video without captions) has an all-False ``text_mask``: it enters the video-audio
    loss only, and the harmonizer leaves it alone (``losses.text_valid`` is False). With ``truth``
    the corpora with a ground truth attach each sample's flags (:func:`corpus_truths`)."""
    text_shape = (int(cfg.features.text.candidates), int(cfg.features.text.max_tokens))
    weights = config_mod.corpora(cfg.to_dict()["pretrain"])
    truths = corpus_truths(cfg, [name for name, _ in weights]) if truth else {}
    sources: list[tuple[str, float, Source]] = []
    for name, weight in weights:
        fmt = config_mod.corpus_format(cfg, name)
        folder = layout.corpus_dir(cfg.path("features"), name, fmt)
        if fmt == "packed":
            source: Source = PackedSource(folder, cfg.features.to_dict(), vocab, dataset=name, truth=truths.get(name))
        else:
            source = DecodedSource(folder, text_shape, dataset=name, split=datasets.get(name).pretrain_splits, truth=truths.get(name))
        sources.append((name, weight, source))
    total = sum(len(source) for _, _, source in sources)
    if total < int(cfg.pretrain.batch_size):
        raise DataError(f"pretrain.batch_size: {cfg.pretrain.batch_size} exceeds the {total} pre-training clips; lower it or generate more data")
    return sources


def build_optimizer(model: torch.nn.Module, cfg: Config, device: torch.device) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases, norms, positional embeddings and aggregation tokens."""
    pcfg = cfg.pretrain
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "pos" in name or "agg" in name else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": float(pcfg.weight_decay)}, {"params": no_decay, "weight_decay": 0.0}],
        lr=float(pcfg.lr),
        betas=tuple(pcfg.betas),
        eps=float(pcfg.eps),
        fused=device.type == "cuda",
    )


def build_scheduler_for(optimizer: torch.optim.Optimizer, cfg: Config) -> torch.optim.lr_scheduler.LambdaLR:
    pcfg = cfg.pretrain
    return build_scheduler(optimizer, float(pcfg.lr), float(pcfg.min_lr), int(pcfg.warmup_steps), int(pcfg.steps))


@dataclass
class Run:
    """The live objects of one run (a resumed run loads its state into them, see :mod:`cmgh.train.state`)."""

    cfg: Config  # resolved for the variant
    spec: RunSpec
    dist: distributed.DistInfo
    device: torch.device
    corpora: list[tuple[str, float, Source]]
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    harmonizer: Harmonizer
    vocab_size: int
    gather: distributed.RowGather | None  # under torchrun the losses see the global batch's negatives

    @property
    def total(self) -> int:
        return int(self.cfg.pretrain.steps)

    def stream(self, start: StreamPosition) -> PretrainStream:
        """This rank's stream of local batches from ``start`` (a restored run's position) on."""
        return PretrainStream(self.corpora, int(self.cfg.pretrain.batch_size), self.spec.seed, self.dist.rank, self.dist.world_size, start=start)

    def batches(self, stream: PretrainStream) -> Iterator[Sample]:
        """``stream``'s batches, decoded by ``pretrain.num_workers`` loader processes (0: in this one)."""
        workers = int(self.cfg.pretrain.num_workers)
        loader = DataLoader(
            stream, batch_size=None, num_workers=workers, pin_memory=self.device.type == "cuda",
            prefetch_factor=2 if workers else None, persistent_workers=False,
        )
        return iter(loader)


def build(cfg: Config, spec: RunSpec) -> Run:
    """Join the process group (if any), write the config, build every part; ``cfg`` is resolved for
    ``spec.variant`` (:func:`cmgh.config.for_variant`)."""
    dist_info = distributed.init_from_env()
    device = distributed.device_for(dist_info)
    spec.out.mkdir(parents=True, exist_ok=True)
    pcfg = cfg.pretrain
    if dist_info.is_main:
        cfg.write(spec.out, layout.CONFIG)

    seed_everything(spec.seed)
    vocab = Vocabulary.load(vocab_path(cfg))
    corpora = corpus_sources(cfg, vocab, truth=needs_truth(cfg))
    model = build_model(cfg, spec.backbone, vocab_size=len(vocab)).to(device)
    optimizer = build_optimizer(model, cfg, device)
    scheduler = build_scheduler_for(optimizer, cfg)
    harmonizer = Harmonizer.from_config(cfg.to_dict()["pretrain"])
    if pcfg.compile:  # region by region, in place: checkpoints stay interchangeable with an eager run's
        compile_model(model, harmonizer, str(pcfg.compile_backend), device)
    gather = distributed.RowGather(dist_info, int(pcfg.batch_size) // dist_info.world_size) if dist_info.enabled else None
    return Run(cfg, spec, dist_info, device, corpora, model, optimizer, scheduler, harmonizer, len(vocab), gather)
