"""Packed shards on real files: the tar contract, offsets, re-encoded media, broken sources, resume, AudioSet, CLI."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from cmgh import cli, layout
from cmgh import config as config_mod
from cmgh.data.datasets import audioset, caption_json, howto100m
from cmgh.data.io import encode, media
from cmgh.data.datasets import packing as pack_sources
from cmgh.data.extract import packed, shards
from cmgh.errors import DataError

JSON_FIELDS = {"key", "item_id", "dataset", "source_id", "source", "duration", "fps", "sample_rate", "has_audio", "captions", "labels"}


def copy_data(cfg: config_mod.Config, dest: Path, *datasets: str, overrides: tuple[str, ...] = ()) -> config_mod.Config:
    """A private copy of some of the session world's datasets (a test may damage it), features under ``dest``."""
    for name in datasets:
        shutil.copytree(layout.dataset_dir(cfg.path("data"), name), dest / "data" / name)
    return config_mod.with_overrides(cfg, [f"paths.data={dest / 'data'}", f"paths.features={dest / 'features'}", *overrides])


def folder(cfg: config_mod.Config, dataset: str = "howto100m") -> Path:
    return layout.packed_dir(cfg.path("features"), dataset)


def tar_bytes(cfg: config_mod.Config, dataset: str = "howto100m") -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder(cfg, dataset) / "shards").glob("*.tar"))}


def manifest(cfg: config_mod.Config, dataset: str = "howto100m") -> pd.Series:
    table = pd.read_csv(folder(cfg, dataset) / layout.FEATURE_MANIFEST)
    return table.set_index("item_id")["status"]


@pytest.fixture(scope="module")
def packed_world(tiny_world: config_mod.Config, tmp_path_factory: pytest.TempPathFactory) -> config_mod.Config:
    """The tiny HowTo100M packed once (read-only for the tests that use it)."""
    cfg = copy_data(tiny_world, tmp_path_factory.mktemp("packed"), "howto100m")
    packed.pack(cfg, "howto100m")
    return cfg


def test_tar_members_follow_the_contract(packed_world: config_mod.Config) -> None:
    cfg = packed_world
    index = pd.read_parquet(layout.packed_index(cfg.path("features"), "howto100m"))
    videos = howto100m.read_howto100m_videos(cfg.path("data") / "howto100m" / layout.HOWTO100M_VIDEOS)
    assert index["item_id"].tolist() == videos["video_id"].tolist()  # one sample per video, in list order
    assert list(index.columns) == [*layout.PACKED_INDEX_COLUMNS, "video_id"]
    shards = sorted((folder(cfg) / "shards").glob("*.tar"))
    assert len(shards) == -(-len(videos) // cfg.features.shard_size) >= 2
    captions = caption_json.read_howto100m_captions(cfg.path("data") / "howto100m" / layout.HOWTO100M_CAPTIONS)
    for k, path in enumerate(shards):
        with tarfile.open(path) as tar:
            members = tar.getmembers()
            keys = index.loc[index["shard"] == k, "key"].tolist()
            assert [m.name for m in members] == [f"{key}.{s}" for key in keys for s in layout.PACKED_MEMBERS]
            assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.mode == 0o644 for m in members)
            for member in members[1::2]:
                sample = json.loads(tar.extractfile(member).read())
                assert set(sample) == JSON_FIELDS
                assert sample["dataset"] == "howto100m" and sample["labels"] == [] and sample["has_audio"] is True
                assert sample["source"] == f"videos/{sample['source_id']}.mp4" and sample["fps"] == cfg.features.video.fps
                track = captions[captions["video_id"] == sample["item_id"]]
                expected = [(s, e, t) for s, e, t in zip(track["start"], track["end"], track["text"], strict=True) if s < sample["duration"]]
                assert [(c["start"], c["end"], c["text"]) for c in sample["captions"]] == expected and expected
        record = json.loads(layout.shard_file(folder(cfg), k, "json").read_text())
        assert set(record) == {"fingerprint", "items"} and all(r["status"] == "ok" for r in record["items"])
    assert (folder(cfg) / layout.CONFIG).is_file()
    assert (manifest(cfg) == "ok").all()


def test_index_offsets_read_the_members(packed_world: config_mod.Config) -> None:
    index = pd.read_parquet(layout.packed_index(packed_world.path("features"), "howto100m"))
    for row in index.itertuples(index=False):
        path = layout.shard_file(folder(packed_world), int(row.shard), "tar")
        with tarfile.open(path) as tar, open(path, "rb") as fh:
            fh.seek(row.mp4_offset)
            assert fh.read(row.mp4_size) == tar.extractfile(f"{row.key}.mp4").read()
            fh.seek(row.json_offset)
            sample = json.loads(fh.read(row.json_size))
        assert sample["item_id"] == row.item_id and sample["duration"] == row.duration


def test_packed_mp4_has_the_configured_streams(packed_world: config_mod.Config) -> None:
    cfg = packed_world
    f = cfg.features
    row = pd.read_parquet(layout.packed_index(cfg.path("features"), "howto100m")).iloc[0]
    with open(layout.shard_file(folder(cfg), int(row.shard), "tar"), "rb") as fh:
        fh.seek(row.mp4_offset)
        data = fh.read(row.mp4_size)
    source = cfg.path("data") / "howto100m" / row.source
    info = media.probe(source)
    assert 0 <= data.find(b"moov") < data.find(b"mdat")  # faststart: a byte-range reader gets the index first
    with av.open(io.BytesIO(data)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and video.codec_context.pix_fmt == "yuv420p"
        assert (video.codec_context.width, video.codec_context.height) == media.scaled_size(info["width"], info["height"], f.video.short_side)
        assert float(video.average_rate) == f.video.fps
        assert audio.codec_context.name == "aac" and audio.codec_context.sample_rate == f.audio.sample_rate
        assert audio.codec_context.channels == 1
        keyframes = [i for i, packet in enumerate(p for p in container.demux(video) if p.size) if packet.is_keyframe]
    gop = round(f.packed.keyframe_seconds * f.video.fps)
    frames = round(row.duration * f.video.fps)
    assert keyframes == list(range(0, frames, gop))
    assert row.duration == pytest.approx(info["duration"], abs=1 / f.video.fps)
    # The frame on screen at k / fps: the packed frames match the source's, scaled the same way.
    clip = media.decode_video(data, 0.0, frames, f.video.fps)
    reference = media.decode_video(source, 0.0, frames, f.video.fps, short_side=f.video.short_side)
    assert clip.shape == reference.shape and np.abs(clip.astype(float) - reference).mean() < 6
    wave = media.decode_audio(data, 0.0, row.duration, f.audio.sample_rate)
    expected = media.decode_audio(source, 0.0, row.duration, f.audio.sample_rate)
    assert np.corrcoef(wave, expected)[0, 1] > 0.9


def test_broken_sources_are_recorded_and_skipped(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    cfg = copy_data(tiny_world, tmp_path, "howto100m")
    videos = sorted((cfg.path("data") / "howto100m" / "videos").glob("*.mp4"))
    missing, corrupt, silent = videos[0], videos[1], videos[2]
    missing.unlink()
    corrupt.write_bytes(corrupt.read_bytes()[:400])
    frames = media.decode_video(silent, 0.0, 16, 8.0)
    encode.write_mp4(silent, frames, 8)  # no audio stream: a legitimate pre-training video
    packed.pack(cfg, "howto100m", workers=2)
    status = manifest(cfg)
    assert status[missing.stem] == "missing" and status[corrupt.stem].startswith("corrupt: ")
    assert status[silent.stem] == shards.NO_AUDIO and (status == "ok").sum() == len(status) - 3
    index = pd.read_parquet(layout.packed_index(cfg.path("features"), "howto100m")).set_index("item_id")
    assert missing.stem not in index.index and corrupt.stem not in index.index
    assert not index.loc[silent.stem, "has_audio"] and index.drop(silent.stem)["has_audio"].all()
    row = index.loc[silent.stem]
    with open(layout.shard_file(folder(cfg), int(row.shard), "tar"), "rb") as fh:
        fh.seek(row.mp4_offset)
        data = fh.read(row.mp4_size)
        fh.seek(row.json_offset)
        assert json.loads(fh.read(row.json_size))["has_audio"] is False
    with av.open(io.BytesIO(data)) as container:
        assert not container.streams.audio and container.streams.video
    assert row.duration == pytest.approx(2.0)


def test_resume_skips_finished_shards_and_repacks_damaged_ones(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    cfg = copy_data(tiny_world, tmp_path, "howto100m", overrides=("features.shard_size=4",))
    packed.pack(cfg, "howto100m")
    reference = tar_bytes(cfg)
    index = pd.read_parquet(layout.packed_index(cfg.path("features"), "howto100m"))
    assert len(reference) == 3
    shards = folder(cfg) / "shards"
    untouched = (shards / "00000.tar").stat().st_mtime_ns
    (shards / "00001.json").unlink()  # interrupted before its JSON: not finished
    damaged = shards / "00002.tar"
    damaged.write_bytes(damaged.read_bytes()[:5000])  # JSON says done, the tar says otherwise
    before = (shards / "00002.tar").stat().st_mtime_ns
    packed.pack(cfg, "howto100m")
    assert tar_bytes(cfg) == reference  # deterministic: a re-packed shard is byte-identical
    assert (shards / "00000.tar").stat().st_mtime_ns == untouched
    assert (shards / "00002.tar").stat().st_mtime_ns != before
    assert pd.read_parquet(layout.packed_index(cfg.path("features"), "howto100m")).equals(index)
    # A changed setting repacks everything; fewer, larger shards leave no stale ones behind.
    packed.pack(config_mod.with_overrides(cfg, ["features.packed.crf=35"]), "howto100m")
    assert all(tar_bytes(cfg)[name] != data for name, data in reference.items())
    packed.pack(config_mod.with_overrides(cfg, ["features.shard_size=8"]), "howto100m")
    assert sorted(p.name for p in shards.iterdir()) == ["00000.json", "00000.tar", "00001.json", "00001.tar"]


@pytest.mark.parametrize("member", ["mp4", "json"])
def test_a_member_damaged_in_place_is_packed_again_by_its_checksum(tiny_world: config_mod.Config, tmp_path: Path, member: str) -> None:
    """Bytes changed without changing sizes (bit rot, a bad copy): headers and JSON still read, the
    CRC-32 recorded at packing does not match. A JSON member that stays valid JSON (a caption's
    letter changed) is the unlisted case of the same class."""
    cfg = copy_data(tiny_world, tmp_path, "howto100m", overrides=("features.shard_size=16",))
    packed.pack(cfg, "howto100m")
    reference = tar_bytes(cfg)
    index = pd.read_parquet(layout.packed_index(cfg.path("features"), "howto100m"))
    row = index.iloc[3]
    tar = layout.shard_file(folder(cfg), int(row.shard), "tar")
    data = bytearray(tar.read_bytes())
    if member == "mp4":
        at = int(row.mp4_offset) + int(row.mp4_size) // 2
        data[at] ^= 0xFF
    else:
        at = data.index(b'"text":"', int(row.json_offset)) + len(b'"text":"')
        data[at] = ord("Z") if data[at] != ord("Z") else ord("Y")
        json.loads(bytes(data[int(row.json_offset) : int(row.json_offset) + int(row.json_size)]))  # still valid JSON
    tar.write_bytes(bytes(data))
    damaged = tar_bytes(cfg)
    packed.pack(config_mod.with_overrides(cfg, ["features.packed.verify=headers"]), "howto100m")
    assert tar_bytes(cfg) == damaged  # the cheap check does not read the payloads
    packed.pack(cfg, "howto100m")
    assert tar_bytes(cfg) == reference  # packed again, byte-identical to the first time
    assert manifest(cfg).eq("ok").sum() == len(index)


def test_a_shard_packed_before_checksums_is_packed_again(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    cfg = copy_data(tiny_world, tmp_path, "howto100m", overrides=("features.shard_size=16",))
    packed.pack(cfg, "howto100m")
    shard_json = layout.shard_file(folder(cfg), 0, "json")
    record = json.loads(shard_json.read_text())
    for item in record["items"]:
        item.pop("mp4_crc32", None)
        item.pop("json_crc32", None)
    shard_json.write_text(json.dumps(record))
    assert packed.verify_shard(folder(cfg), 0, shards.split(packed.pack_items("howto100m", cfg.path("data") / "howto100m"), 16)[0],
                               record["fingerprint"], checksums=True) is None
    assert packed.verify_shard(folder(cfg), 0, shards.split(packed.pack_items("howto100m", cfg.path("data") / "howto100m"), 16)[0],
                               record["fingerprint"], checksums=False) is not None
    packed.pack(cfg, "howto100m")
    assert all("mp4_crc32" in item for item in json.loads(shard_json.read_text())["items"] if item["status"] == "ok")


def test_max_seconds_caps_the_packed_clip(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    cfg = copy_data(tiny_world, tmp_path, "howto100m", overrides=("features.packed.max_seconds=1.3", "features.shard_size=16"))
    packed.pack(cfg, "howto100m")
    index = pd.read_parquet(layout.packed_index(cfg.path("features"), "howto100m"))
    fps, rate = cfg.features.video.fps, cfg.features.audio.sample_rate
    assert (index["duration"] == 1.5).all()  # ceil(1.3 * 4) = 6 frames at 4 fps
    with tarfile.open(layout.shard_file(folder(cfg), 0, "tar")) as tar:
        sample = json.loads(tar.extractfile(f"{index.key[0]}.json").read())
        data = tar.extractfile(f"{index.key[0]}.mp4").read()
    assert sample["captions"] and all(c["start"] < 1.5 for c in sample["captions"])
    with av.open(io.BytesIO(data)) as container:
        assert sum(1 for p in container.demux(video=0) if p.size) == 6
    with av.open(io.BytesIO(data)) as container:
        samples = sum(frame.samples for frame in container.decode(audio=0))
    assert abs(samples - 1.5 * rate) <= 1024  # audio lasts as long as the video (to an AAC frame)
    assert fps == 4


def test_audioset_packs_pretraining_segments_only(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    cfg = copy_data(tiny_world, tmp_path, "audioset")
    root = cfg.path("data") / "audioset"
    balanced = audioset.read_audioset_segments(root / "balanced_train_segments.csv")
    evaluation = audioset.read_audioset_segments(root / "eval_segments.csv")
    audioset.write_audioset_segments(root / "unbalanced_train_segments.csv", evaluation.iloc[:1])  # also an eval clip's file
    clips = [audioset.audioset_clip_path(root, row) for row in balanced.itertuples(index=False)]
    wav = clips[0].with_suffix(".wav")
    wave = media.decode_audio(clips[0], 0.0, 2.0, 16000)
    with av.open(str(wav), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray((wave[None, :] * 32767).astype(np.int16), format="s16", layout="mono")
        frame.sample_rate = 16000
        for chunk in (stream.encode(frame), stream.encode(None)):
            container.mux(chunk)
    clips[0].unlink()
    packed.pack(cfg, "audioset")
    status = manifest(cfg, "audioset")
    ids = [f"{r.YTID}_{int(r.start_seconds)}" for r in balanced.itertuples(index=False)]
    unbalanced = f"{evaluation.YTID[0]}_{int(evaluation.start_seconds[0])}"
    assert status.index.tolist() == [*ids, unbalanced]  # never the eval segments' own entries
    assert status[ids[0]] == packed.NO_VIDEO and (status.drop(ids[0]) == "ok").all()
    index = pd.read_parquet(layout.packed_index(cfg.path("features"), "audioset")).set_index("item_id")
    assert index["split"].to_dict() == {**{i: "train" for i in ids[1:]}, unbalanced: "unbalanced_train"}
    classes = audioset.read_audioset_classes(root / layout.AUDIOSET_CLASSES)
    index_of = dict(zip(classes["mid"], classes["index"], strict=True))
    assert list(index.loc[ids[1], "labels"]) == sorted(index_of[m] for m in balanced.positive_labels[1])
    with tarfile.open(layout.shard_file(folder(cfg, "audioset"), 0, "tar")) as tar:
        sample = json.loads(tar.extractfile(f"{pack_sources.member_key(ids[1])}.json").read())
    assert sample["labels"] == list(index.loc[ids[1], "labels"]) and sample["captions"] == [] and sample["source_id"] == balanced.YTID[1]


def test_keys_carry_no_dots_and_must_be_unique(tmp_path: Path) -> None:
    assert pack_sources.member_key("a.b.c") == "a_b_c"
    root = tmp_path / "howto100m"
    table = pd.DataFrame({"video_id": ["v.1", "v_1"], "category_1": "x", "category_2": "y", "rank": [1, 2], "task_id": [1, 2]})
    howto100m.write_howto100m_videos(root / layout.HOWTO100M_VIDEOS, table)
    caption_json.write_howto100m_captions(root / layout.HOWTO100M_CAPTIONS, {"v.1": {"start": [0.0], "end": [1.0], "text": ["a"]}})
    with pytest.raises(DataError, match="share the shard member key 'v_1'"):
        packed.pack_items("howto100m", root)


def test_corpus_format_and_cli_dispatch(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    cfg = copy_data(tiny_world, tmp_path, "audioset")
    corpora = "pretrain.corpora=[{dataset: howto100m, weight: 1}, {dataset: audioset, weight: 0.5}]"
    assert config_mod.corpus_format(cfg, "audioset") == "decoded"  # features.format defaults to decoded
    mixed = config_mod.with_overrides(cfg, ["features.format=packed", corpora])
    assert config_mod.corpus_format(mixed, "audioset") == "packed" and config_mod.corpus_format(mixed.to_dict(), "kinetics") == "decoded"
    assert config_mod.corpus_format(config_mod.with_overrides(cfg, ["features.format=packed"]), "audioset") == "decoded"
    base = ["data", "extract", "--dataset", "audioset", "--set", f"paths.data={cfg.path('data')}", "--set", f"paths.features={cfg.path('features')}"]
    for name in ("data.synth.audioset.train=6", "data.synth.audioset.eval=4", "features.workers=0"):
        base += ["--set", name]
    assert cli.main([*base, "--set", "features.format=packed", "--set", corpora]) == 0
    assert layout.packed_index(cfg.path("features"), "audioset").is_file()
    assert not layout.feature_index(cfg.path("features"), "audioset").exists()
    assert cli.main([*base, "--set", "features.format=packed"]) == 0  # audioset is no configured corpus: decoded
    decoded = pd.read_parquet(layout.feature_index(cfg.path("features"), "audioset"))
    assert set(decoded["split"]) == {"train", "eval"}
    shutil.rmtree(folder(cfg, "audioset"))
    assert cli.main([*base, "--format", "packed"]) == 0  # forced
    assert layout.packed_index(cfg.path("features"), "audioset").is_file()


def test_a_killed_packing_leaves_no_orphans_and_its_debris_is_swept(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    import psutil

    cfg = copy_data(tiny_world, tmp_path, "howto100m", overrides=("features.shard_size=4",))
    config_file = cfg.write(tmp_path / "cfg")
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from cmgh import config; from cmgh.data.extract import packed; "
              "packed.pack(config.load(sys.argv[2]), 'howto100m', workers=2)")
    proc = subprocess.Popen([sys.executable, "-c", script, str(Path(__file__).resolve().parents[3]), str(config_file)])
    shard_dir = folder(cfg) / "shards"
    deadline, children = time.monotonic() + 60, []
    while time.monotonic() < deadline and proc.poll() is None:
        children = psutil.Process(proc.pid).children(recursive=True)
        if len(children) >= 2 and list(shard_dir.glob(".*.tmp")):
            break
        time.sleep(0.05)
    assert proc.poll() is None and len(children) >= 2, "packing ended before it could be killed mid-shard"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"orphaned workers: {[p.pid for p in alive]}"
    assert list(shard_dir.glob(".*.tmp"))  # the killed run's partial shard
    packed.pack(cfg, "howto100m")
    assert not list(shard_dir.glob(".*.tmp"))  # swept by the next run of the step
