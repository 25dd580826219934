"""Pre-training from packed shards of two corpora: exact resume, and AudioSet pairs outside the video-text loss."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from cmgh import config as config_mod, layout
from cmgh import checkpoint as ckpt
from cmgh.data.extract import packed
from cmgh.train.cost import MACHINE_METRICS
from cmgh.train.loop import RunSpec, load_metrics_log, pretrain
from tests.train.tiny_runs import assert_same_state, small, state_of

MIXED = "pretrain.corpora=[{dataset: howto100m, weight: 0.6}, {dataset: audioset, weight: 0.4}]"


@pytest.fixture(scope="module")
def packed_world(tiny_world: config_mod.Config, tmp_path_factory: pytest.TempPathFactory) -> config_mod.Config:
    """The tiny world's HowTo100M and AudioSet packed (features.format=packed) into a features folder of their own."""
    features = tmp_path_factory.mktemp("packed_features")
    shutil.copy(tiny_world.path("features") / "vocab.json", features / "vocab.json")
    cfg = config_mod.with_overrides(tiny_world, [f"paths.features={features}", "features.format=packed", MIXED])
    for name in ("howto100m", "audioset"):
        packed.pack(cfg, name, workers=0)
    return cfg


def test_killed_packed_run_resumes_to_the_uninterrupted_parameters(packed_world: config_mod.Config, tmp_path: Path) -> None:
    cfg = small(packed_world, "pretrain.steps=8")
    full = pretrain(cfg, RunSpec("ms", "gr_gcl", 0, tmp_path / "full"))
    # The interrupted run streams with two loader processes: the sequence does not depend on them.
    with_workers = config_mod.with_overrides(cfg, ["pretrain.num_workers=2"])
    pretrain(with_workers, RunSpec("ms", "gr_gcl", 0, tmp_path / "cut"), stop_after=5)
    position = ckpt.load(tmp_path / "cut" / "resume.pt")["position"]
    assert position["step"] == 5 and sum(position["consumed"].values()) == 5 * 8
    resumed = pretrain(with_workers, RunSpec("ms", "gr_gcl", 0, tmp_path / "cut"))
    assert_same_state(state_of(full), state_of(resumed))
    drop = list(MACHINE_METRICS)
    assert load_metrics_log(tmp_path / "full").drop(columns=drop).equals(load_metrics_log(tmp_path / "cut").drop(columns=drop))


def test_audioset_pairs_get_no_video_text_loss_and_no_harmonization(packed_world: config_mod.Config, tmp_path: Path) -> None:
    cfg = small(packed_world, "pretrain.steps=6", "pretrain.score_every=1", "pretrain.curriculum.warmup_steps=1",
                "pretrain.curriculum.schedule=constant", "pretrain.curriculum.start_keep=0.5", "pretrain.curriculum.end_keep=0.5")
    run = tmp_path / "run"
    pretrain(cfg, RunSpec("ms", "gr_gcl", 0, run))
    scores = pd.concat([pd.read_csv(f) for f in sorted((run / "scores").glob("step_*.csv"))], ignore_index=True)
    pairs, triplets = scores[scores["dataset"] == "audioset"], scores[scores["dataset"] == "howto100m"]
    assert len(pairs) and len(triplets)
    assert (pairs["cos"] == 0).all() and pairs["kept"].all()  # no conflict measured, never dropped by the curriculum
    assert (triplets["cos"] != 0).any() and not triplets["kept"].all()  # triplets are harmonized and curated
    # Windows are drawn inside each packed clip, and the same clip gets other windows over the epochs.
    assert (scores["clip_end"] - scores["clip_start"]).round(6).eq(cfg.features.video.frames / cfg.features.video.fps).all()
    per_item = triplets.groupby("item_id")["clip_start"].nunique()
    assert (per_item > 1).any()


def test_decoded_corpora_mix_too_and_audioset_pairs_come_from_its_training_split(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    from cmgh.data.stream.decoded import read_index
    from cmgh.data.extract.text import Vocabulary
    from cmgh.train.setup import corpus_sources

    cfg = small(tiny_world, MIXED)
    sources = dict((name, source) for name, _, source in corpus_sources(cfg, Vocabulary.load(cfg.path("features") / "vocab.json")))
    audioset = read_index(cfg.path("features") / "audioset")
    assert len(sources["audioset"]) == int((audioset["split"] == "train").sum()) < len(audioset)  # never the eval split
    run = tmp_path / "run"
    pretrain(config_mod.with_overrides(cfg, ["pretrain.steps=4", "pretrain.score_every=1"]), RunSpec("ms", "baseline", 0, run))
    scores = pd.concat([pd.read_csv(f) for f in (run / "scores").glob("step_*.csv")], ignore_index=True)
    assert set(scores["dataset"]) == {"howto100m", "audioset"}
    eval_ids = set(audioset.loc[audioset["split"] == "eval", "item_id"])
    assert not eval_ids & set(scores.loc[scores["dataset"] == "audioset", "item_id"])


def test_substituted_samples_are_counted_in_the_log_the_summary_and_a_warning(packed_world: config_mod.Config, tmp_path: Path, caplog) -> None:
    features = tmp_path / "features"
    shutil.copytree(packed_world.path("features"), features)
    row = pd.read_parquet(layout.packed_index(features, "howto100m")).iloc[0]
    tar = layout.shard_file(layout.packed_dir(features, "howto100m"), int(row["shard"]), "tar")
    data = bytearray(tar.read_bytes())
    start, size = int(row["json_offset"]), int(row["json_size"])
    data[start:start + size] = b"[]".ljust(size)  # valid JSON, not a sample's
    tar.write_bytes(bytes(data))
    cfg = small(packed_world, "pretrain.steps=6", f"paths.features={features}")
    with caplog.at_level(logging.WARNING):
        pretrain(cfg, RunSpec("ms", "baseline", 0, tmp_path / "run"))
    summary = json.loads((tmp_path / "run" / layout.SUMMARY).read_text())
    logged = load_metrics_log(tmp_path / "run")
    assert summary["skipped_samples"] >= 1 and logged["skipped_total"].iloc[-1] == summary["skipped_samples"]
    assert logged["skipped_total"].is_monotonic_increasing and logged["skipped_total"].iloc[0] <= summary["skipped_samples"]
    assert f"{summary['skipped_samples']} unreadable training samples were substituted" in caplog.text


def test_a_video_without_audio_trains_no_video_audio_loss(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    from cmgh.data.io import encode, media

    data = tmp_path / "data" / "howto100m"
    shutil.copytree(layout.dataset_dir(tiny_world.path("data"), "howto100m"), data)
    features = tmp_path / "features"
    features.mkdir()
    shutil.copy(tiny_world.path("features") / "vocab.json", features / "vocab.json")
    silent = sorted((data / "videos").glob("*.mp4"))[0]
    encode.write_mp4(silent, media.decode_video(silent, 0.0, 16, 8.0), 8)  # the same pictures, no audio stream
    cfg = config_mod.with_overrides(tiny_world, [f"paths.data={tmp_path / 'data'}", f"paths.features={features}", "features.format=packed",
                                                 "pretrain.corpora=[{dataset: howto100m}]"])
    packed.pack(cfg, "howto100m", workers=0)
    run = tmp_path / "run"
    pretrain(small(cfg, "pretrain.steps=6", "pretrain.score_every=1"), RunSpec("ms", "gr_gcl", 0, run))
    scores = pd.concat([pd.read_csv(f) for f in sorted((run / "scores").glob("step_*.csv"))], ignore_index=True)
    mine = scores["item_id"].str.startswith(silent.stem)
    assert mine.any() and (scores.loc[mine, "loss_va"] == 0).all() and (scores.loc[~mine, "loss_va"] > 0).all()
    assert (scores.loc[mine, "cos"] == 0).all() and scores.loc[mine, "kept"].all()  # not compared, never curated
