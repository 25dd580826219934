"""The generator: determinism, exact noise fractions, readable outputs and learnable concepts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.helpers import tiny_overrides

from cmgh import config as config_mod
from cmgh import layout
from cmgh.data.datasets import concepts as concepts_mod
from cmgh.data import datasets
from cmgh.data.datasets import audioset, caption_json, howto100m, kinetics, msrvtt, noise_labels
from cmgh.data.io import media
from cmgh.data.synth import generate

ANNOTATIONS = {
    "howto100m": ["HowTo100M_v1.csv", "caption.json", "noise_labels.csv"],
    "kinetics": ["annotations/train.csv", "annotations/validate.csv", "annotations/test.csv"],
    "audioset": ["balanced_train_segments.csv", "eval_segments.csv", "class_labels_indices.csv"],
    "msrvtt": ["videodatainfo.json", "MSRVTT_JSFUSION_test.csv"],
}


def load(root: Path, *extra: str) -> config_mod.Config:
    return config_mod.load(overrides=[*tiny_overrides(root), *extra])


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> tuple[config_mod.Config, config_mod.Config]:
    """The tiny world generated twice from the same seed, into two folders."""
    a = load(tmp_path_factory.mktemp("a"))
    b = load(tmp_path_factory.mktemp("b"))
    generate.synthesize(a, progress=False)
    generate.synthesize(b, progress=False)
    return a, b


def test_returns_roots_with_stamps(worlds) -> None:
    cfg, _ = worlds
    roots = generate.synthesize(cfg, progress=False)
    assert list(roots) == list(datasets.names())
    for name, root in roots.items():
        assert root == datasets.dataset_root(cfg, name)
        assert json.loads((root / layout.STAMP).read_text()) == generate.stamp_of(cfg, name)
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        assert json.loads((root / layout.GENERATED).read_text()) == [f for f in files if f != layout.GENERATED]  # it recorded every file it wrote


def test_same_seed_same_bytes_and_frames(worlds) -> None:
    a, b = worlds
    for name, files in ANNOTATIONS.items():
        for rel in files:
            assert (a.path("data") / name / rel).read_bytes() == (b.path("data") / name / rel).read_bytes(), rel
    clips = sorted(p.relative_to(a.path("data")) for p in a.path("data").rglob("*.mp4"))
    assert clips == sorted(p.relative_to(b.path("data")) for p in b.path("data").rglob("*.mp4"))
    for rel in clips:
        assert (a.path("data") / rel).read_bytes() == (b.path("data") / rel).read_bytes(), rel
    clip_a, clip_b = a.path("data") / clips[0], b.path("data") / clips[0]
    np.testing.assert_array_equal(media.decode_video(clip_a, 0.0, 8, 4.0), media.decode_video(clip_b, 0.0, 8, 4.0))


def test_different_seed_differs(worlds, tmp_path: Path) -> None:
    a, _ = worlds
    other = load(tmp_path, "data.synth.seed=1")
    generate.synthesize(other, datasets=["msrvtt"], progress=False)
    for rel in ANNOTATIONS["msrvtt"]:
        assert (a.path("data") / "msrvtt" / rel).read_bytes() != (other.path("data") / "msrvtt" / rel).read_bytes()
    clip = "video0.mp4"
    frames_a = media.decode_video(a.path("data") / "msrvtt" / "videos" / clip, 0.0, 4, 4.0)
    frames_o = media.decode_video(other.path("data") / "msrvtt" / "videos" / clip, 0.0, 4, 4.0)
    assert not np.array_equal(frames_a, frames_o)


def test_one_dataset_size_does_not_change_another(worlds, tmp_path: Path) -> None:
    a, _ = worlds
    bigger = load(tmp_path, "data.synth.howto100m.videos=14", "data.synth.audioset.eval=5")
    generate.synthesize(bigger, datasets=["audioset"], progress=False)
    for rel in ("balanced_train_segments.csv", "class_labels_indices.csv"):
        assert (a.path("data") / "audioset" / rel).read_bytes() == (bigger.path("data") / "audioset" / rel).read_bytes()
    eval_a = audioset.read_audioset_segments(a.path("data") / "audioset" / "eval_segments.csv")
    eval_b = audioset.read_audioset_segments(bigger.path("data") / "audioset" / "eval_segments.csv")
    assert eval_b.iloc[:4].equals(eval_a)


def test_howto100m_noise_fractions_are_exact(worlds) -> None:
    cfg, _ = worlds
    root = cfg.path("data") / "howto100m"
    labels = noise_labels.read_noise_labels(root / "noise_labels.csv")
    spec = cfg.data.synth.howto100m
    total = spec.videos * spec.segments_per_video
    assert len(labels) == total
    assert (labels["audio_aligned"] == 0).sum() == round(cfg.data.noise.audio_rate * total)
    assert (labels["text_aligned"] == 0).sum() == round(cfg.data.noise.text_rate * total)
    assert (labels["clip_end"] - labels["clip_start"]).eq(spec.segment_seconds).all()
    videos = howto100m.read_howto100m_videos(root / "HowTo100M_v1.csv")
    assert len(videos) == spec.videos and set(labels["video_id"]) == set(videos["video_id"])
    assert videos["video_id"].str.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{10}").all()


def test_howto100m_captions_and_videos(worlds) -> None:
    cfg, _ = worlds
    root = cfg.path("data") / "howto100m"
    spec = cfg.data.synth.howto100m
    length = spec.segments_per_video * spec.segment_seconds
    captions = caption_json.read_howto100m_captions(root / "caption.json")
    assert len(captions) == spec.videos * spec.segments_per_video * spec.captions_per_segment
    assert (captions["start"] >= 0).all() and (captions["end"] <= length).all() and (captions["end"] > captions["start"]).all()
    vid = captions["video_id"].iloc[0]
    info = media.probe(root / "videos" / f"{vid}.mp4")
    m = cfg.data.synth.media
    assert info["duration"] == pytest.approx(length, abs=0.1)
    assert (info["width"], info["height"], info["fps"], info["sample_rate"]) == (m.width, m.height, m.fps, m.sample_rate)
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"


def test_kinetics_layout(worlds) -> None:
    cfg, _ = worlds
    root = cfg.path("data") / "kinetics"
    spec = cfg.data.synth.kinetics
    for filename, split, per_class in (("train.csv", "train", spec.train_per_class), ("validate.csv", "val", spec.val_per_class),
                                       ("test.csv", "test", spec.test_per_class)):  # fmt: skip
        table = kinetics.read_kinetics(root / "annotations" / filename)
        assert len(table) == spec.classes * per_class and set(table["split"]) == {split}
        assert table["label"].value_counts().eq(per_class).all()
        for row in table.itertuples(index=False):
            assert kinetics.kinetics_clip_path(root, row).is_file()


def test_audioset_multilabel(worlds) -> None:
    cfg, _ = worlds
    root = cfg.path("data") / "audioset"
    classes = audioset.read_audioset_classes(root / "class_labels_indices.csv")
    n = cfg.data.synth.concepts
    assert len(classes) > n and classes["mid"].is_unique and classes["index"].tolist() == list(range(len(classes)))
    segments = audioset.read_audioset_segments(root / "balanced_train_segments.csv")
    assert len(segments) == cfg.data.synth.audioset.train
    groups = set(classes["mid"].iloc[n:])
    for row in segments.itertuples(index=False):
        concepts = [m for m in row.positive_labels if m not in groups]
        assert 1 <= len(concepts) <= cfg.data.synth.audioset.max_sources
        assert any(m in groups for m in row.positive_labels)  # every clip carries a group label
        assert audioset.audioset_clip_path(root, row).is_file()
    header = (root / "eval_segments.csv").read_text().splitlines()[1]
    assert header.startswith(f"# num_ytids={cfg.data.synth.audioset.eval}, num_segs={cfg.data.synth.audioset.eval},")


def test_msrvtt_layout(worlds) -> None:
    cfg, _ = worlds
    root = cfg.path("data") / "msrvtt"
    spec = cfg.data.synth.msrvtt
    videos, sentences = msrvtt.read_msrvtt_info(root / "videodatainfo.json")
    assert videos["split"].value_counts().to_dict() == {"train": spec.train, "validate": spec.val, "test": spec.test}
    assert videos["video_id"].tolist() == [f"video{i}" for i in range(len(videos))]
    assert len(sentences) == len(videos) * spec.captions_per_video and sentences["sen_id"].is_unique
    test = msrvtt.read_msrvtt_test(root / "MSRVTT_JSFUSION_test.csv")
    assert test["video_id"].tolist() == videos.loc[videos["split"] == "test", "video_id"].tolist()
    assert set(zip(test["video_id"], test["sentence"], strict=True)) <= set(zip(sentences["video_id"], sentences["caption"], strict=True))
    assert all((root / "videos" / f"{v}.mp4").is_file() for v in videos["video_id"])


def test_idempotent_and_regenerates_on_change(tmp_path: Path) -> None:
    cfg = load(tmp_path, "data.synth.msrvtt.train=2", "data.synth.msrvtt.val=1", "data.synth.msrvtt.test=3")
    root = generate.synthesize(cfg, datasets=["msrvtt"], progress=False)["msrvtt"]
    stamp = root / layout.STAMP
    before = stamp.stat().st_mtime_ns, (root / "videos" / "video0.mp4").stat().st_mtime_ns
    generate.synthesize(cfg, datasets=["msrvtt"], progress=False)
    assert (stamp.stat().st_mtime_ns, (root / "videos" / "video0.mp4").stat().st_mtime_ns) == before
    smaller = config_mod.with_overrides(cfg, ["data.synth.msrvtt.test=2"])
    generate.synthesize(smaller, datasets=["msrvtt"], progress=False)
    assert sorted(p.name for p in (root / "videos").iterdir()) == [f"video{i}.mp4" for i in range(5)]  # video5 (stale) removed
    assert json.loads(stamp.read_text())["msrvtt"]["test"] == 2


def _ridge_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    weights = np.linalg.solve(a.T @ a + 0.01 * len(a) * np.eye(a.shape[1]), a.T @ np.eye(int(train_y.max()) + 1)[train_y])
    return float(((b @ weights).argmax(1) == test_y).mean())


def test_concepts_are_learnable_but_not_trivial() -> None:
    """A linear probe on crude features (colour histogram at 32x32, 8 kHz spectrum) tells concepts apart."""
    concepts = concepts_mod.build_concepts(8, seed=0)
    assert len({w for c in concepts for w in c.words}) == 8 * len(concepts[0].words)
    video_feats, audio_feats, labels = [], [], []
    for c in concepts:
        for i in range(16):
            rng = np.random.default_rng([3, c.index, i])
            frames = concepts_mod.render_video(c, rng, 2.0, 4, 32, 32).astype(np.float32) / 255
            hist = np.histogramdd(frames.reshape(-1, 3), bins=4, range=[(0, 1)] * 3)[0].ravel()
            video_feats.append(hist / hist.sum())
            wave = concepts_mod.render_audio(c, rng, 2.0, 8000)
            audio_feats.append(np.log1p(np.abs(np.fft.rfft(wave))[:8000].reshape(-1, 100).sum(1)))
            labels.append(c.index)
    y = np.array(labels)
    train = np.arange(len(y)) % 16 < 10
    for feats in (np.array(video_feats), np.array(audio_feats)):
        accuracy = _ridge_probe(feats[train], y[train], feats[~train], y[~train])
        assert accuracy >= 0.6, accuracy  # chance is 0.125
    # Nuisance: the same concept never renders twice the same way.
    rng = np.random.default_rng(0)
    first, second = (concepts_mod.render_video(concepts[0], rng, 1.0, 4, 32, 32) for _ in range(2))
    assert np.abs(first.astype(int) - second.astype(int)).mean() > 10


def test_captions_use_concept_vocabulary() -> None:
    concepts = concepts_mod.build_concepts(4, seed=0)
    rng = np.random.default_rng(0)
    for c in concepts:
        for style in ("asr", "describe"):
            words = concepts_mod.make_caption(c, rng, style).split()
            assert sum(w in c.words for w in words) >= 2
            assert not any(w in other.words for other in concepts if other is not c for w in words)


def _downloaded_kinetics(root: Path) -> dict[Path, bytes]:
    """A Kinetics folder as `cmgh data download` leaves it: annotations, a clip, its manifest row, the staging folder, the stamp."""
    from cmgh.data.download.manifest import Manifest, Row

    clip = root / "train" / "abseiling" / "abcdefghijk_000010_000020.mp4"
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42 downloaded clip")
    train = layout.kinetics_split_csv(root.parent, "train")
    train.parent.mkdir(parents=True)
    train.write_text("label,youtube_id,time_start,time_end,split\nabseiling,abcdefghijk,10,20,train\n")
    manifest = Manifest(root)
    manifest.record(Row("annotation", "train.csv", "http://127.0.0.1/train.csv", str(train.relative_to(root)), "ok", "", train.stat().st_size, "a" * 64))
    manifest.record(Row("clip", "abcdefghijk_10", "http://127.0.0.1/v/abcdefghijk", str(clip.relative_to(root)), "ok", "", clip.stat().st_size, "b" * 64))
    manifest.save()
    (root / layout.STAMP).write_text(json.dumps({"source": "download", "dataset": "kinetics"}))
    assert (root / layout.DOWNLOAD_STAGING).is_dir()
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_synth_never_deletes_downloaded_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cmgh import cli

    root = layout.dataset_dir(tmp_path / "data", "kinetics")
    before = _downloaded_kinetics(root)
    code = cli.main(["data", "synth", "--dataset", "kinetics", *(a for o in tiny_overrides(tmp_path) for a in ("--set", o))])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("cmgh: error: ")
    assert str(root / layout.DOWNLOAD_MANIFEST) in err and "paths.data" in err
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert cli.main(["data", "synth", "--dataset", "msrvtt", "--dataset", "kinetics", *(a for o in tiny_overrides(tmp_path) for a in ("--set", o))]) == 2
    assert not (tmp_path / "data" / "msrvtt").exists()  # every folder is checked before any is written


def test_synth_refuses_files_it_did_not_write_and_regenerates_only_its_own(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cmgh import cli

    args = ["data", "synth", "--dataset", "msrvtt", *(a for o in tiny_overrides(tmp_path) for a in ("--set", o))]
    assert cli.main(args) == 0
    root = layout.dataset_dir(tmp_path / "data", "msrvtt")
    notes = root / "videos" / "my_notes.txt"
    notes.write_text("mine")
    assert cli.main([*args, "--set", "data.synth.msrvtt.test=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(notes) in err and "was not written by" in err
    assert notes.read_text() == "mine" and (root / "videos" / "video9.mp4").is_file()  # nothing deleted
    notes.unlink()
    assert cli.main([*args, "--set", "data.synth.msrvtt.test=2"]) == 0
    assert sorted(p.name for p in (root / "videos").iterdir()) == sorted(f"video{i}.mp4" for i in range(8))  # video8, video9 (stale) removed


def test_synth_refuses_a_folder_an_older_generator_left_without_a_record(tmp_path: Path) -> None:
    from cmgh.errors import DataError

    cfg = load(tmp_path, "data.synth.msrvtt.train=2", "data.synth.msrvtt.val=1", "data.synth.msrvtt.test=3")
    root = generate.synthesize(cfg, datasets=["msrvtt"], progress=False)["msrvtt"]
    (root / layout.GENERATED).unlink()
    with pytest.raises(DataError, match=r"older `cmgh data synth`.*delete .*msrvtt yourself"):
        generate.synthesize(config_mod.with_overrides(cfg, ["data.synth.msrvtt.test=2"]), datasets=["msrvtt"], progress=False)
    assert (root / "videos" / "video5.mp4").is_file()
