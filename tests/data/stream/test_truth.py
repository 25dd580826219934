"""The generator's ground truth in the pre-training batch (the oracle control's data plumbing), on
the tiny generated world in both feature formats: each row's flags are its clip's labels by the
noise evaluation's own rule, rows of a corpus without labels get False, and a stream built
without ground truth carries no flags."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch

from cmgh import config as config_mod
from cmgh import layout
from cmgh.config import Config
from cmgh.data.datasets.noise_labels import MISALIGNED_AUDIO, MISALIGNED_TEXT, TRUTH_KEYS, ClipTruth, corpus_labels
from cmgh.data.extract import packed
from cmgh.data.extract.text import Vocabulary
from cmgh.data.stream.pretrain import PretrainStream
from cmgh.errors import DataError
from cmgh.evaluate.noise_truth import label_clips
from cmgh.train.setup import corpus_sources

MIXED = "pretrain.corpora=[{dataset: howto100m, weight: 0.7}, {dataset: audioset, weight: 0.3}]"
SMALL = [MIXED, "pretrain.batch_size=8"]


@pytest.fixture(scope="module")
def packed_world(tiny_world: Config, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The tiny world's HowTo100M and AudioSet packed into a features folder of their own."""
    features = tmp_path_factory.mktemp("packed_truth")
    shutil.copy(tiny_world.path("features") / "vocab.json", features / "vocab.json")
    cfg = config_mod.with_overrides(tiny_world, [f"paths.features={features}", "features.format=packed", *SMALL])
    for name in ("howto100m", "audioset"):
        packed.pack(cfg, name, workers=0)
    return cfg


def batches(cfg: Config, truth: bool, steps: int = 6, batch: int = 8, rank: int = 0, world: int = 1) -> list[dict]:
    sources = corpus_sources(cfg, Vocabulary.load(cfg.path("features") / "vocab.json"), truth=truth)
    return list(PretrainStream(sources, batch, seed=0, rank=rank, world_size=world, stop=steps))


def expected(cfg: Config, batch: dict) -> pd.DataFrame:
    """The evaluation's labels (label_clips) of the batch's HowTo100M rows, by row."""
    fmt = config_mod.corpus_format(cfg, "howto100m")
    index = pd.read_parquet(layout.corpus_dir(cfg.path("features"), "howto100m", fmt) / layout.FEATURE_INDEX)
    video = dict(zip(index["item_id"].astype(str), index["video_id"], strict=True))
    rows = [r for r, d in enumerate(batch["dataset"]) if d == "howto100m"]
    clips = pd.DataFrame({"item_id": rows, "video_id": [video[batch["item_id"][r]] for r in rows],
                          "clip_start": batch["clip_start"][rows].numpy(), "clip_end": batch["clip_end"][rows].numpy()})
    return label_clips(clips, corpus_labels(cfg.path("data"), "howto100m")).set_index("item_id")


@pytest.mark.parametrize("fmt", ["decoded", "packed"])
def test_batch_flags_are_the_labels_of_its_clips(tiny_world: Config, packed_world: Config, fmt: str) -> None:
    cfg = packed_world if fmt == "packed" else config_mod.with_overrides(tiny_world, SMALL)
    seen = {"howto100m": 0, "audioset": 0, "misaligned": 0}
    for batch in batches(cfg, truth=True):
        audio, text = batch[MISALIGNED_AUDIO], batch[MISALIGNED_TEXT]
        assert audio.dtype == text.dtype == torch.bool and audio.shape == text.shape == (len(batch["item_id"]),)
        truth = expected(cfg, batch)
        for row, dataset in enumerate(batch["dataset"]):
            seen[dataset] += 1
            if dataset == "audioset":  # a corpus without ground truth, in a batch with it: False
                assert not audio[row] and not text[row]
                continue
            assert (bool(audio[row]), bool(text[row])) == (bool(truth.at[row, "audio"]), bool(truth.at[row, "text"]))
            seen["misaligned"] += int(audio[row] or text[row])
    assert seen["howto100m"] and seen["audioset"] and seen["misaligned"]


def test_each_rank_carries_the_flags_of_its_own_rows(tiny_world: Config) -> None:
    cfg = config_mod.with_overrides(tiny_world, SMALL)
    whole = batches(cfg, truth=True, steps=3)
    ranks = [batches(cfg, truth=True, steps=3, rank=r, world=2) for r in range(2)]
    for step, batch in enumerate(whole):
        first, second = (ranks[r][step] for r in range(2))
        assert first["item_id"] + second["item_id"] == batch["item_id"]
        for key in TRUTH_KEYS:
            assert torch.equal(torch.cat([first[key], second[key]]), batch[key])


def test_without_truth_a_batch_carries_no_flags(tiny_world: Config) -> None:
    for batch in batches(config_mod.with_overrides(tiny_world, SMALL), truth=False, steps=2):
        assert not set(TRUTH_KEYS) & set(batch)


def test_truth_asked_of_corpora_without_labels_is_refused_in_one_line(tiny_world: Config) -> None:
    cfg = config_mod.with_overrides(tiny_world, [*SMALL, "pretrain.corpora=[{dataset: audioset}]", "pretrain.curriculum.scorer=oracle"])
    with pytest.raises(DataError) as err:
        batches(cfg, truth=True, steps=1)
    message = str(err.value)
    assert "\n" not in message and "'oracle'" in message and "(audioset)" in message and "data.source: synth" in message


def test_labels_that_do_not_describe_the_clips_are_refused(tiny_world: Config) -> None:
    from cmgh.data.stream.decoded import DecodedSource

    labels = corpus_labels(tiny_world.path("data"), "howto100m")
    shifted = labels.assign(clip_start=labels["clip_start"] + 100.0, clip_end=labels["clip_end"] + 100.0)
    text_shape = (int(tiny_world.features.text.candidates), int(tiny_world.features.text.max_tokens))
    with pytest.raises(DataError, match="no segment of video .* contains the clip"):
        DecodedSource(tiny_world.path("features") / "howto100m", text_shape, truth=ClipTruth(shifted))
