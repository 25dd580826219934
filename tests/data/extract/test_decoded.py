"""Extraction into shards: shapes, manifest of broken media, resumption, worker equivalence, loaders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cmgh import config as config_mod
from cmgh.data.datasets import howto100m, items
from cmgh.data.extract import decoded
from cmgh.data.stream.decoded import ShardedClips, TokenizedTexts, make_loader
from cmgh.data.extract.text import PAD_ID, UNK_ID, Vocabulary
from cmgh.errors import DataError


def shard_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "shards").glob("*.npy"))}


def copy_world(cfg: config_mod.Config, dest: Path) -> config_mod.Config:
    """A private copy of the session's world that a test may damage."""
    shutil.copytree(cfg.path("data"), dest / "data")
    shutil.copytree(cfg.path("features"), dest / "features")
    return config_mod.with_overrides(cfg, [f"paths.data={dest / 'data'}", f"paths.features={dest / 'features'}"])


def test_pretrain_shards_have_the_configured_shapes(tiny_world: config_mod.Config) -> None:
    root = decoded.feature_dir(tiny_world, "howto100m")
    index = pd.read_parquet(root / "index.parquet")
    videos = howto100m.read_howto100m_videos(tiny_world.path("data") / "howto100m" / "HowTo100M_v1.csv")
    assert len(index) == len(videos) * tiny_world.features.clips_per_video
    assert set(index.columns) >= {"item_id", "shard", "row", "video_id", "clip_start", "clip_end"}
    dataset = ShardedClips(root)
    sample = dataset[3]
    f = tiny_world.features
    assert sample["video"].dtype == torch.uint8 and tuple(sample["video"].shape) == (f.video.frames, f.video.size, f.video.size, 3)
    assert sample["audio"].dtype == torch.float32 and sample["audio"].shape == (round(f.audio.sample_rate * f.video.frames / f.video.fps),)
    assert float(sample["audio"].abs().max()) <= 1.0 and float(sample["audio"].abs().max()) > 0.01
    assert tuple(sample["text"].shape) == (f.text.candidates, f.text.max_tokens)
    assert sample["has_text"] and bool(sample["text_mask"][0])
    # Frames carry the generated pattern, not a blank decode.
    assert float(sample["video"].float().std()) > 5.0


def test_captions_are_the_nearest_in_time() -> None:
    track = pd.DataFrame({"start": [0.0, 1.0, 2.0, 3.0], "end": [1.0, 2.0, 3.0, 4.0], "text": ["a", "b", "c", "d"]})
    assert items.nearest_captions(track, 2.0, 4.0, 2) == ("c", "d")
    assert items.nearest_captions(track, 0.0, 2.0, 3) == ("a", "b", "c")
    assert items.nearest_captions(track.iloc[0:0], 0.0, 2.0, 3) == ()


def test_downstream_indices_carry_labels_and_splits(tiny_world: config_mod.Config) -> None:
    kin = ShardedClips(decoded.feature_dir(tiny_world, "kinetics"), split="train", modalities=("video",), label_columns=("label_index",))
    synth = tiny_world.data.synth.kinetics
    assert len(kin) == synth.classes * synth.train_per_class
    assert {kin[i]["label_index"] for i in range(len(kin))} == set(range(synth.classes))
    audio = ShardedClips(decoded.feature_dir(tiny_world, "audioset"), modalities=("audio",), label_columns=("labels",))
    assert len(audio) == tiny_world.data.synth.audioset.train + tiny_world.data.synth.audioset.eval
    assert all(len(audio[i]["labels"]) >= 1 for i in range(len(audio)))
    # Datasets without captions still batch with triplets (VATT's AudioSet video-audio pairs).
    padded = ShardedClips(decoded.feature_dir(tiny_world, "audioset"), text_shape=(4, 16))
    assert not padded[0]["has_text"] and padded[0]["text"].shape == (4, 16)
    queries = TokenizedTexts(decoded.feature_dir(tiny_world, "msrvtt"), "test_1ka")
    assert len(queries) == tiny_world.data.synth.msrvtt.test
    assert (queries[0]["text"] > PAD_ID).any()


def test_broken_media_are_recorded_and_skipped(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    cfg = copy_world(tiny_world, tmp_path)
    clips = sorted((cfg.path("data") / "msrvtt" / "videos").glob("*.mp4"))
    clips[0].unlink()  # missing
    clips[1].write_bytes(clips[1].read_bytes()[:300])  # truncated
    clips[2].write_bytes(b"this is not an mp4 at all" * 40)  # garbage
    shutil.rmtree(decoded.feature_dir(cfg, "msrvtt"))
    decoded.extract(cfg, "msrvtt")
    manifest = pd.read_csv(decoded.feature_dir(cfg, "msrvtt") / "manifest.csv").set_index("item_id")
    by_file = {Path(s).stem: st for s, st in zip(manifest["source"], manifest["status"], strict=True)}
    assert by_file[clips[0].stem] == "missing"
    assert by_file[clips[1].stem].startswith("corrupt: ")
    assert by_file[clips[2].stem].startswith("corrupt: ")
    assert (manifest["status"] == "ok").sum() == len(clips) - 3
    index = pd.read_parquet(decoded.feature_dir(cfg, "msrvtt") / "index.parquet")
    assert len(index) == len(clips) - 3 and clips[0].stem not in set(index["video_id"])
    dataset = ShardedClips(decoded.feature_dir(cfg, "msrvtt"))
    assert all(dataset[i]["video"].shape[0] == cfg.features.video.frames for i in range(len(dataset)))


def test_resumed_extraction_is_identical(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    cfg = copy_world(tiny_world, tmp_path)
    root = decoded.feature_dir(cfg, "howto100m")
    reference = shard_bytes(root)
    assert len({name.split(".")[0] for name in reference}) >= 3, "tiny world should span several shards"
    # An interrupted run: the second shard never finished, the third is half written.
    (root / "shards" / "00001.json").unlink()
    (root / "shards" / "00001.video.npy").unlink()
    (root / "shards" / "00002.json").unlink()
    (root / "shards" / "00002.audio.npy").write_bytes(b"partial")
    untouched = (root / "shards" / "00000.video.npy").stat().st_mtime_ns
    decoded.extract(cfg, "howto100m")
    assert shard_bytes(root) == reference
    assert (root / "shards" / "00000.video.npy").stat().st_mtime_ns == untouched  # finished shards skipped


def test_parallel_workers_match_in_process(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    cfg = copy_world(tiny_world, tmp_path)
    root = decoded.feature_dir(cfg, "kinetics")
    reference = shard_bytes(root)
    shutil.rmtree(root)
    decoded.extract(cfg, "kinetics", workers=2)
    assert shard_bytes(root) == reference
    assert pd.read_parquet(root / "index.parquet").equals(pd.read_parquet(decoded.feature_dir(tiny_world, "kinetics") / "index.parquet"))


def test_changed_setting_invalidates_shards(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    cfg = copy_world(tiny_world, tmp_path)
    cfg = config_mod.with_overrides(cfg, ["features.video.size=16", "model.video_patch=[2, 8, 8]"])
    decoded.extract(cfg, "kinetics")
    video = np.load(decoded.feature_dir(cfg, "kinetics") / "shards" / "00000.video.npy")
    assert video.shape[2:4] == (16, 16)


def test_loader_order_depends_only_on_seed(tiny_world: config_mod.Config) -> None:
    dataset = ShardedClips(decoded.feature_dir(tiny_world, "howto100m"))
    first = [b["index"].tolist() for b in make_loader(dataset, 5, shuffle=True, seed=3)]
    again = [b["index"].tolist() for b in make_loader(dataset, 5, shuffle=True, seed=3)]
    other = [b["index"].tolist() for b in make_loader(dataset, 5, shuffle=True, seed=4)]
    assert first == again and first != other
    batch = next(iter(make_loader(dataset, 5)))
    assert batch["video"].shape[0] == 5 and batch["text"].dtype == torch.int64


def test_vocabulary_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    texts = ["the cat sat", "The cat ran!", "a dog"]
    vocab = Vocabulary.build(texts, size=5)
    assert vocab.tokens == ["<pad>", "<unk>", "cat", "the", "a"]
    ids = vocab.encode("the dog cat", 5)
    assert ids.tolist() == [3, UNK_ID, 2, PAD_ID, PAD_ID]
    assert vocab.decode(ids) == "the <unk> cat"
    loaded = Vocabulary.load(vocab.save(tmp_path / "v.json"))
    assert loaded.tokens == vocab.tokens
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="bad.json: not a vocabulary file"):
        Vocabulary.load(tmp_path / "bad.json")


def test_missing_features_give_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="index.parquet: feature index not found"):
        ShardedClips(tmp_path)


def test_audio_only_wav_clips_are_accepted_for_audioset(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    import av

    cfg = copy_world(tiny_world, tmp_path)
    clips = sorted((cfg.path("data") / "audioset" / "clips").glob("*.mp4"))
    source = clips[0]
    from cmgh.data.io import media

    media_audio = media.decode_audio(source, 0.0, media.duration(source), 16000)
    wav = source.with_suffix(".wav")
    with av.open(str(wav), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray((media_audio[None, :] * 32767).astype(np.int16), format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    source.unlink()
    shutil.rmtree(decoded.feature_dir(cfg, "audioset"))
    decoded.extract(cfg, "audioset")
    index = pd.read_parquet(decoded.feature_dir(cfg, "audioset") / "index.parquet").set_index("source")
    assert not bool(index.loc[f"clips/{wav.name}", "has_video"])
    assert index["has_video"].sum() == len(index) - 1
    dataset = ShardedClips(decoded.feature_dir(cfg, "audioset"))
    row = int(np.flatnonzero(~dataset.index["has_video"].to_numpy())[0])
    sample = dataset[row]
    assert float(sample["audio"].abs().max()) > 0.01 and int(sample["video"].sum()) == 0


def test_shards_written_before_has_audio_are_probed_not_decoded_again(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    import json

    from cmgh import layout
    from cmgh.data.io import encode, media
    from cmgh.data.extract import shards

    cfg = copy_world(tiny_world, tmp_path)
    root = decoded.feature_dir(cfg, "audioset")
    silent = sorted((cfg.path("data") / "audioset" / "clips").glob("*.mp4"))[0]
    encode.write_mp4(silent, media.decode_video(silent, 0.0, 16, 8.0), 8)  # after extraction: the shards hold its old audio
    for shard_json in sorted((root / "shards").glob("*.json")):  # as an older extraction wrote them
        record = json.loads(shard_json.read_text())
        shard_json.write_text(json.dumps({**record, "items": [{k: v for k, v in r.items() if k != "has_audio"} for r in record["items"]]}))
    arrays = shard_bytes(root)
    decoded.extract(cfg, "audioset")
    assert shard_bytes(root) == arrays  # nothing decoded again
    index = pd.read_parquet(root / layout.FEATURE_INDEX).set_index("source")
    assert not index.loc[f"clips/{silent.name}", "has_audio"] and index["has_audio"].sum() == len(index) - 1
    manifest = pd.read_csv(root / layout.FEATURE_MANIFEST).set_index("source")["status"]
    assert manifest[f"clips/{silent.name}"] == shards.NO_AUDIO
