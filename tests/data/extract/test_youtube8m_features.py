"""YouTube-8M as a pre-training corpus on real generated files: decoded windows and packed samples,
captions nearest each window (none: a video-audio pair), labels from the records, manifest statuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmgh import cli, layout
from cmgh import config as config_mod
from cmgh.data import datasets
from cmgh.data.datasets import items, youtube8m_format as yt8m
from cmgh.data.datasets import packing as pack_sources
from cmgh.data.extract import decoded as extraction, shards
from cmgh.data.stream.decoded import ShardedClips
from cmgh.data.datasets.items import Item
from cmgh.data.extract.text import Vocabulary
from tests.data.youtube8m_tree import captioned_ids, youtube8m_world


@pytest.fixture(scope="module")
def decoded(tiny_world: config_mod.Config, tmp_path_factory: pytest.TempPathFactory) -> config_mod.Config:
    return youtube8m_world(tiny_world, tmp_path_factory.mktemp("yt8m_decoded"))


@pytest.fixture(scope="module")
def packed_cfg(tiny_world: config_mod.Config, tmp_path_factory: pytest.TempPathFactory) -> config_mod.Config:
    return youtube8m_world(tiny_world, tmp_path_factory.mktemp("yt8m_packed"), fmt="packed")


def root_of(cfg: config_mod.Config) -> Path:
    return layout.dataset_dir(cfg.path("data"), "youtube8m")


def manifest(folder: Path) -> pd.Series:
    return pd.read_csv(folder / layout.FEATURE_MANIFEST).set_index("item_id")["status"]


def expected_statuses(root: Path, per_video: list[str]) -> dict[str, str]:
    """Every record's manifest rows: unresolved, windows without captions, ok."""
    captioned = captioned_ids(root)
    out = {}
    for row in yt8m.read_videos(root).itertuples(index=False):
        if not row.youtube_id:
            out[row.record_id] = yt8m.NO_YOUTUBE_ID
            continue
        for suffix in per_video:
            out[row.youtube_id + suffix] = "ok" if row.youtube_id in captioned else shards.NO_CAPTIONS
    return out


def test_decoded_windows_carry_records_labels_and_nearest_captions(decoded: config_mod.Config) -> None:
    cfg, root = decoded, root_of(decoded)
    folder = layout.feature_dir(cfg.path("features"), "youtube8m")
    videos = yt8m.read_videos(root)
    resolved = videos[videos["youtube_id"] != ""]
    assert 0 < len(resolved) < len(videos)  # the world has one unresolved pseudo id
    k = int(cfg.features.clips_per_video)
    length = items.clip_seconds(cfg.features)
    index = pd.read_parquet(folder / layout.FEATURE_INDEX)
    assert {"video_id", "record_id", "labels", "clip_start", "clip_end"} <= set(index.columns)
    assert index["item_id"].tolist() == [f"{v}_{j:03d}" for v in resolved["youtube_id"] for j in range(k)]  # every split, record order
    assert set(videos["split"]) == {"train", "validate"}
    for row, rec in zip(index.itertuples(index=False), resolved.loc[resolved.index.repeat(k)].itertuples(index=False), strict=True):
        assert row.video_id == rec.youtube_id and row.record_id == rec.record_id and list(row.labels) == rec.labels
    assert index["clip_start"].tolist() == [j * length for _ in range(len(resolved)) for j in range(k)]
    assert np.allclose(index["clip_end"] - index["clip_start"], length)

    statuses = manifest(folder)
    assert statuses.to_dict() == expected_statuses(root, [f"_{j:03d}" for j in range(k)])
    assert statuses.map(lambda s: s.split(":")[0]).isin(["ok", "unavailable"]).all()
    lost = videos[videos["youtube_id"] == ""].iloc[0]
    sources = pd.read_csv(folder / layout.FEATURE_MANIFEST).set_index("item_id")["source"]
    assert sources[lost.record_id] == f"{layout.YOUTUBE8M_RECORDS_DIR}/{lost.record}"

    # Text: the shared vocabulary's tokens of the captions nearest each window (items.nearest), none without captions.
    vocab = Vocabulary.load(layout.vocab(cfg.path("features")))
    tracks, empty = items.caption_tracks(root / layout.YOUTUBE8M_CAPTIONS)
    clips = ShardedClips(folder)
    captioned = captioned_ids(root)
    assert {True, False} == {v in captioned for v in index["video_id"]}
    for i, row in enumerate(index.itertuples(index=False)):
        sample = clips[i]
        texts = items.nearest_captions(tracks.get(row.video_id, empty), row.clip_start, row.clip_end, int(cfg.features.text.candidates))
        assert sample["has_text"] == (row.video_id in captioned) == bool(texts)
        assert sample["text_mask"].tolist() == [j < len(texts) for j in range(int(cfg.features.text.candidates))]
        for j, text in enumerate(texts):
            assert sample["text"][j].tolist() == vocab.encode(text, int(cfg.features.text.max_tokens)).tolist()
        assert float(sample["video"].float().std()) > 5.0 and float(sample["audio"].abs().max()) > 0.01


def test_packed_samples_carry_captions_labels_and_statuses(packed_cfg: config_mod.Config) -> None:
    cfg, root = packed_cfg, root_of(packed_cfg)
    folder = layout.packed_dir(cfg.path("features"), "youtube8m")
    videos = yt8m.read_videos(root)
    resolved = videos[videos["youtube_id"] != ""]
    index = pd.read_parquet(folder / layout.FEATURE_INDEX)
    assert list(index.columns) == [*layout.PACKED_INDEX_COLUMNS, *datasets.get("youtube8m").packing.columns]
    assert index["item_id"].tolist() == resolved["youtube_id"].tolist() == index["video_id"].tolist()
    assert index["record_id"].tolist() == resolved["record_id"].tolist()
    assert [list(v) for v in index["labels"]] == resolved["labels"].tolist()
    assert manifest(folder).to_dict() == expected_statuses(root, [""])
    tracks = pack_sources.caption_tuples(root / layout.YOUTUBE8M_CAPTIONS)
    for row in index.itertuples(index=False):
        with open(layout.shard_file(folder, int(row.shard), "tar"), "rb") as fh:
            fh.seek(row.json_offset)
            sample = json.loads(fh.read(row.json_size))
        assert sample["dataset"] == "youtube8m" and sample["labels"] == list(row.labels) and sample["source"] == f"videos/{row.video_id}.mp4"
        assert [(c["start"], c["end"], c["text"]) for c in sample["captions"]] == list(tracks.get(row.video_id, ()))
        assert row.duration == pytest.approx(cfg.data.synth.youtube8m.segments_per_video * cfg.data.synth.youtube8m.segment_seconds, abs=0.3)


def test_a_window_past_the_video_end_is_skipped(decoded: config_mod.Config) -> None:
    source = layout.video_file(root_of(decoded), pd.read_parquet(layout.feature_index(decoded.path("features"), "youtube8m"))["video_id"].iloc[0])
    spec = extraction.decode_spec(decoded, with_text=False)
    seconds = spec.frames / spec.fps
    duration = decoded.data.synth.youtube8m.segments_per_video * decoded.data.synth.youtube8m.segment_seconds
    inside = extraction.decode_item(Item("in", source, duration - seconds), spec)
    half_out = extraction.decode_item(Item("out", source, duration - seconds / 2 + 0.05), spec)
    assert inside.status == "ok" and half_out.status == extraction.PAST_END and half_out.arrays is None
    planned = extraction.decode_item(Item("rec", source, None, status=yt8m.NO_YOUTUBE_ID), spec)
    assert planned.status == yt8m.NO_YOUTUBE_ID and planned.arrays is None


def test_cli_extracts_both_formats_and_keeps_the_howto100m_vocabulary(decoded: config_mod.Config, tmp_path: Path) -> None:
    vocab = layout.vocab(decoded.path("features"))
    before = vocab.read_bytes()
    base = ["data", "extract", "--dataset", "youtube8m", "--set", f"paths.data={decoded.path('data')}",
            "--set", f"paths.features={tmp_path}", "--set", "features.workers=0", "--set", "features.shard_size=8"]
    (tmp_path / vocab.name).write_bytes(before)
    assert cli.main(base) == 0  # features.format decoded (the default)
    assert pd.read_parquet(layout.feature_index(tmp_path, "youtube8m")).equals(pd.read_parquet(layout.feature_index(decoded.path("features"), "youtube8m")))
    assert cli.main([*base, "--set", "features.format=packed", "--set", "pretrain.corpora=[{dataset: youtube8m}]"]) == 0
    assert layout.packed_index(tmp_path, "youtube8m").is_file()
    assert (tmp_path / vocab.name).read_bytes() == before == vocab.read_bytes()  # the vocabulary is HowTo100M's, never rebuilt
