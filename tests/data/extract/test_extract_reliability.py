"""Issue 13: extraction and loading never drop, mislabel or half-read data silently.

One test per case, each on a private copy of the session's tiny world damaged the way a careless
or hostile user would, through the real CLI.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmgh import config as config_mod
from cmgh import layout
from cmgh.cli import main
from cmgh.data.datasets import audioset, caption_json, kinetics, youtube8m_format as yt8m
from cmgh.data.extract import shards
from cmgh.data.datasets.items import INVALID_ID
from tests.helpers import tiny_overrides

TRAIN = ["pretrain.batch_size=4", "pretrain.steps=2", "pretrain.warmup_steps=1", "model.width=32", "model.heads=2",
         "model.depth=1", "tracking.enabled=false"]


def copy(cfg: config_mod.Config, dest: Path, *datasets: str, features: bool = False) -> Path:
    """The raw ``datasets`` of the session world under ``dest/data`` (and their features plus the
    vocabulary under ``dest/features`` when ``features``); returns ``dest``."""
    for name in datasets:
        shutil.copytree(layout.dataset_dir(cfg.path("data"), name), dest / "data" / name)
        if features:
            shutil.copytree(layout.feature_dir(cfg.path("features"), name), dest / "features" / name)
    (dest / "features").mkdir(parents=True, exist_ok=True)
    shutil.copy(layout.vocab(cfg.path("features")), dest / "features" / layout.VOCAB)
    return dest


def cli(dest: Path, *argv: str, sets: tuple[str, ...] = ()) -> int:
    """``cmgh <argv>`` with the tiny config's overrides pointing every path under ``dest``."""
    options = [arg for o in (*tiny_overrides(dest), *sets) for arg in ("--set", o)]
    return main([*argv, *options])


def manifest(folder: Path) -> pd.Series:
    return pd.read_csv(folder / layout.FEATURE_MANIFEST, keep_default_na=False).set_index("item_id")["status"]


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("cmgh: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------- case: unknown AudioSet labels


def test_unknown_audioset_labels_are_counted_and_unlabelled_segments_left_out(
    tiny_world: config_mod.Config, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dest = copy(tiny_world, tmp_path, "audioset")
    path = dest / "data" / "audioset" / layout.AUDIOSET_SEGMENT_FILES["train"]
    table = audioset.read_audioset_segments(path)
    known = table.at[1, "positive_labels"][0]
    table.at[0, "positive_labels"] = ["/m/unknown1", "/m/unknown2"]  # no label of the class list
    table.at[1, "positive_labels"] = [known, "/m/unknown1"]  # one known, one not
    audioset.write_audioset_segments(path, table)
    lost, partial = f"{table.at[0, 'YTID']}_{int(table.at[0, 'start_seconds'])}", f"{table.at[1, 'YTID']}_{int(table.at[1, 'start_seconds'])}"
    classes = audioset.read_audioset_classes(dest / "data" / "audioset" / layout.AUDIOSET_CLASSES)
    index_of = dict(zip(classes["mid"], classes["index"], strict=True))

    for fmt, folder in (("decoded", layout.feature_dir(dest / "features", "audioset")), ("packed", layout.packed_dir(dest / "features", "audioset"))):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            assert cli(dest, "data", "extract", "--dataset", "audioset", "--format", fmt) == 0
        status = manifest(folder)
        assert status[lost] == "skipped: no known label"
        assert status[partial] == shards.OK and (status.drop(lost) == shards.OK).all()
        index = pd.read_parquet(folder / layout.FEATURE_INDEX).set_index("item_id")
        assert lost not in index.index and list(index.at[partial, "labels"]) == [index_of[known]]
        assert "3 labels of 2 segments are not in" in caplog.text and "/m/unknown1, /m/unknown2" in caplog.text
        assert "1 segment with no known label left out" in caplog.text
        assert "'skipped: no known label': 1" in caplog.text  # the summary line counts it


# ---------------------------------------------------------------- case: damaged shards are redone


def test_reextraction_redoes_a_shard_whose_arrays_are_truncated_or_deleted(
    tiny_world: config_mod.Config, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dest = copy(tiny_world, tmp_path, "howto100m", features=True)
    folder = layout.feature_dir(dest / "features", "howto100m")
    reference = {p.name: p.read_bytes() for p in sorted((folder / layout.SHARDS_DIR).glob("*.npy"))}
    truncated, deleted, untouched = (layout.shard_file(folder, k, name) for k, name in ((0, "video.npy"), (1, "audio.npy"), (2, "video.npy")))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    deleted.unlink()
    before = untouched.stat().st_mtime_ns
    with caplog.at_level(logging.WARNING):
        assert cli(dest, "data", "extract", "--dataset", "howto100m") == 0
    assert {p.name: p.read_bytes() for p in sorted((folder / layout.SHARDS_DIR).glob("*.npy"))} == reference
    assert untouched.stat().st_mtime_ns == before
    assert str(truncated) in caplog.text and str(deleted) in caplog.text and "decoding the shard again" in caplog.text

    # Packed: a truncated or deleted tar is packed again, the others are kept.
    assert cli(dest, "data", "extract", "--dataset", "howto100m", "--format", "packed", sets=("features.shard_size=4",)) == 0
    packed = layout.packed_dir(dest / "features", "howto100m")
    tars = {p.name: p.read_bytes() for p in sorted((packed / layout.SHARDS_DIR).glob("*.tar"))}
    assert len(tars) == 3
    layout.shard_file(packed, 0, "tar").write_bytes(tars["00000.tar"][: len(tars["00000.tar"]) // 2])
    layout.shard_file(packed, 1, "tar").unlink()
    kept = layout.shard_file(packed, 2, "tar").stat().st_mtime_ns
    assert cli(dest, "data", "extract", "--dataset", "howto100m", "--format", "packed", sets=("features.shard_size=4",)) == 0
    assert {p.name: p.read_bytes() for p in sorted((packed / layout.SHARDS_DIR).glob("*.tar"))} == tars
    assert layout.shard_file(packed, 2, "tar").stat().st_mtime_ns == kept


# ---------------------------------------------------------------- case: a video without captions


def test_video_without_captions_is_recorded_and_counted(tiny_world: config_mod.Config, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dest = copy(tiny_world, tmp_path, "howto100m")
    captions_path = dest / "data" / "howto100m" / layout.HOWTO100M_CAPTIONS
    captions = json.loads(captions_path.read_text())
    silent = sorted(captions)[0]
    del captions[silent]
    caption_json.write_howto100m_captions(captions_path, captions)
    for fmt, folder in (("decoded", layout.feature_dir(dest / "features", "howto100m")), ("packed", layout.packed_dir(dest / "features", "howto100m"))):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            assert cli(dest, "data", "extract", "--dataset", "howto100m", "--format", fmt) == 0
        status = manifest(folder)
        mine = status[[i for i in status.index if i.startswith(silent)]]
        assert len(mine) == 1 and (mine == shards.NO_CAPTIONS).all()
        assert (status.drop(mine.index) == shards.OK).all()
        assert f"'{shards.NO_CAPTIONS}': 1" in caplog.text


# ---------------------------------------------------------------- case: clear errors at loading time


def test_truncated_shard_is_a_one_line_error_at_training(tiny_world: config_mod.Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = copy(tiny_world, tmp_path, "howto100m", features=True)
    pretrain = ("pretrain", "--backbone", "ms", "--variant", "baseline", "--out", str(tmp_path / "run"))
    npy = layout.shard_file(layout.feature_dir(dest / "features", "howto100m"), 1, "video.npy")
    npy.write_bytes(npy.read_bytes()[:-1000])
    assert cli(dest, *pretrain, sets=tuple(TRAIN)) == 2
    err = error_line(capsys)
    assert str(npy) in err and "truncated" in err and "cmgh data extract" in err
    npy.unlink()
    assert cli(dest, *pretrain, sets=tuple(TRAIN)) == 2
    assert str(npy) in error_line(capsys)

    packed = ("features.format=packed", "features.shard_size=4")
    assert cli(dest, "data", "extract", "--dataset", "howto100m", sets=packed) == 0
    tar = layout.shard_file(layout.packed_dir(dest / "features", "howto100m"), 2, "tar")
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    capsys.readouterr()
    assert cli(dest, *pretrain, sets=(*TRAIN, *packed)) == 2
    err = error_line(capsys)
    assert str(tar) in err and "truncated" in err


def test_garbage_index_parquet_is_a_one_line_error(tiny_world: config_mod.Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = copy(tiny_world, tmp_path, "howto100m", features=True)
    index = layout.feature_index(dest / "features", "howto100m")
    for garbage in (b"PAR1 this is not a parquet file at all PAR1", b"", index.read_bytes()[:200]):
        index.write_bytes(garbage)
        assert cli(dest, "pretrain", "--backbone", "ms", "--variant", "baseline", "--out", str(tmp_path / "run"), sets=tuple(TRAIN)) == 2
        err = error_line(capsys)
        assert str(index) in err and "not a readable Parquet table" in err


@pytest.mark.parametrize(
    "content",
    [b'{"tokens": 5}', b'{"tokens": ["a", "b"]}', b'{"tokens": ["<pad>", "<unk>", 7]}', b'["<pad>", "<unk>"]', b"\xff\xfe{}", b'{"tok'],
    ids=["not-a-list", "no-specials", "not-strings", "not-an-object", "not-utf8", "truncated"],
)
def test_malformed_vocab_json_is_a_one_line_error(tiny_world: config_mod.Config, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes) -> None:
    dest = copy(tiny_world, tmp_path, "msrvtt")
    vocab = layout.vocab(dest / "features")
    vocab.write_bytes(content)
    assert cli(dest, "data", "extract", "--dataset", "msrvtt") == 2
    err = error_line(capsys)
    assert str(vocab) in err and "expected" in err


# ---------------------------------------------------------------- case: an unsafe id in an annotation file


def test_unsafe_id_is_recorded_as_invalid_id_and_the_rest_extracted(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    dest = copy(tiny_world, tmp_path, "howto100m", "kinetics", "audioset", "msrvtt")
    data = dest / "data"
    videos = data / "howto100m" / layout.HOWTO100M_VIDEOS
    videos.write_text(videos.read_text() + "../x,Pets and Animals,Dogs,1,2\n")
    line = len(videos.read_text().splitlines())
    clips = kinetics.read_kinetics(layout.kinetics_split_csv(data, "train"))
    clips.loc[len(clips)] = [clips.at[0, "label"], "a/b", 10, 20, "train"]
    kinetics.write_kinetics(layout.kinetics_split_csv(data, "train"), clips)
    segments = data / "audioset" / layout.AUDIOSET_SEGMENT_FILES["eval"]
    segments.write_text(segments.read_text() + f'.hidden, 1.000, 3.000, "{audioset.read_audioset_classes(data / "audioset" / layout.AUDIOSET_CLASSES).at[0, "mid"]}"\n')
    info = data / "msrvtt" / layout.MSRVTT_INFO
    payload = json.loads(info.read_text())
    payload["videos"][2]["video_id"] = "video/../../etc"
    info.write_text(json.dumps(payload))

    yt8m_root = data / "youtube8m"
    record = layout.youtube8m_record(yt8m_root, "train", 0)
    zeros = (np.zeros(yt8m.RGB_DIM), np.zeros(yt8m.AUDIO_DIM))
    yt8m.write_records(record, [yt8m.encode_video(v, [1], *zeros, release=2017) for v in ("../evil", "fine_id")])
    caption_json.write_howto100m_captions(yt8m_root / layout.YOUTUBE8M_CAPTIONS, {})

    expected = {  # dataset -> (unsafe id, where the row names it)
        "howto100m": ("../x", f"{layout.HOWTO100M_VIDEOS} line {line}"),
        "kinetics": ("a/b_000010_000020", f"{layout.KINETICS_ANNOTATIONS_DIR}/{layout.KINETICS_SPLIT_FILES['train']} line {len(clips) + 1}"),
        "audioset": (".hidden_1", f"{layout.AUDIOSET_SEGMENT_FILES['eval']} line {len(segments.read_text().splitlines())}"),
        "msrvtt": ("video/../../etc", f"{layout.MSRVTT_INFO} videos[2]"),
        "youtube8m": ("../evil", f"{layout.YOUTUBE8M_RECORDS_DIR}/{record.name}"),
    }
    for name, (item_id, where) in expected.items():
        assert cli(dest, "data", "extract", "--dataset", name) == 0, name
        folder = layout.feature_dir(dest / "features", name)
        status = manifest(folder)
        assert status[item_id].startswith(f"{INVALID_ID}: {where}: "), (name, status[item_id])
        assert "not a safe file name" in status[item_id]
        assert (status.drop(item_id) == ("missing" if name == "youtube8m" else shards.OK)).all(), name  # fine_id has no video
        assert item_id not in set(pd.read_parquet(folder / layout.FEATURE_INDEX)["item_id"])
    assert cli(dest, "data", "extract", "--dataset", "howto100m", "--format", "packed") == 0
    assert manifest(layout.packed_dir(dest / "features", "howto100m"))["../x"].startswith(f"{INVALID_ID}: {layout.HOWTO100M_VIDEOS} line {line}: ")
    assert not np.any([".." in p.name for p in (dest / "features").rglob("*")])
