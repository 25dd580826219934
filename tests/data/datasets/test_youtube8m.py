"""YouTube-8M's real format: records of both releases from an independent writer, the vocabulary,
the pseudo-id lookup answers, and the generated corpus in that layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tfrecord  # an independent writer (its own protobuf messages and CRC code)

from cmgh import config as config_mod
from cmgh import layout
from cmgh.data.datasets import caption_json, noise_labels, youtube8m_format as yt8m
from cmgh.data.synth import generate
from cmgh.errors import DataError


def _write_independently(path: Path, videos: list[tuple[str, list[int]]], release: int) -> None:
    rng = np.random.default_rng(0)
    key = "id" if release == 2018 else "video_id"
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = tfrecord.TFRecordWriter(str(path))
    for vid, labels in videos:
        writer.write({
            key: (vid.encode(), "byte"),
            "labels": (labels, "int"),
            "mean_rgb": (rng.random(1024).astype(np.float32).tolist(), "float"),
            "mean_audio": (rng.random(128).astype(np.float32).tolist(), "float"),
        })
    writer.close()


def test_both_releases_read_back_to_the_same_ids_and_labels(tmp_path: Path) -> None:
    root = tmp_path / "youtube8m"
    videos_2018 = [("Ab3x", [0, 17, 3861]), ("Zz09", [5]), ("k-_1", [2, 3])]
    _write_independently(layout.youtube8m_record(root, "train", 0), videos_2018, 2018)
    _write_independently(layout.youtube8m_record(root, "validate", 3), [("dQw4w9WgXcQ", [7, 8])], 2017)
    yt8m.append_ids(root, [("Ab3x", "aaaaaaaaaaa")])
    yt8m.append_ids(root, [("Zz09", "bbbbbbbbbbb")])  # k-_1 was never looked up (or is unknown)

    table = yt8m.read_videos(root)
    assert table["record_id"].tolist() == ["Ab3x", "Zz09", "k-_1", "dQw4w9WgXcQ"]
    assert table["youtube_id"].tolist() == ["aaaaaaaaaaa", "bbbbbbbbbbb", "", "dQw4w9WgXcQ"]
    assert table["labels"].tolist() == [[0, 17, 3861], [5], [2, 3], [7, 8]]
    assert table["split"].tolist() == ["train", "train", "train", "validate"]
    assert table["record"].tolist() == ["train0000.tfrecord"] * 3 + ["validate0003.tfrecord"]
    assert yt8m.read_videos(root, splits=("validate",))["record_id"].tolist() == ["dQw4w9WgXcQ"]


def test_a_damaged_record_names_the_file_and_record(tmp_path: Path) -> None:
    path = layout.youtube8m_record(tmp_path, "train", 1)
    _write_independently(path, [("Ab3x", [1]), ("Zz09", [2])], 2018)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # inside the second record's payload
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"train0001\.tfrecord: record 1: corrupt") as err:
        yt8m.read_records(path)
    assert "\n" not in str(err.value)
    path.write_bytes(bytes(data[:-7]))
    with pytest.raises(DataError, match=r"train0001\.tfrecord: record 1: truncated"):
        yt8m.read_records(path)


def test_wrong_feature_sizes_and_names_are_one_line_errors(tmp_path: Path) -> None:
    path = layout.youtube8m_record(tmp_path, "test", 0)
    yt8m.write_records(path, [tfrecord_example(mean_rgb=np.zeros(10))])
    with pytest.raises(DataError, match=r"test0000\.tfrecord: record 0: feature 'mean_rgb' has 10 values, expected 1024 floats"):
        yt8m.read_records(path)
    with pytest.raises(DataError, match=r"not a YouTube-8M record name"):
        yt8m.read_records(yt8m.write_records(tmp_path / "video" / "part-0.tfrecord", []))


def tfrecord_example(**overrides: np.ndarray) -> bytes:
    from cmgh.data.io import tfrecord as ours

    features = {"id": [b"Ab3x"], "labels": np.array([1], np.int64), "mean_rgb": np.zeros(1024), "mean_audio": np.zeros(128), **overrides}
    return ours.encode_example(features)


def test_id_table_survives_a_torn_line_and_names_a_bad_one(tmp_path: Path) -> None:
    yt8m.append_ids(tmp_path, [("Ab3x", "aaaaaaaaaaa"), ("Zz09", "bbbbbbbbbbb")])
    with open(layout.youtube8m_ids(tmp_path), "a") as fh:
        fh.write("k-_1,ccc")  # killed mid-line: not an answer
    assert yt8m.read_ids(tmp_path) == {"Ab3x": "aaaaaaaaaaa", "Zz09": "bbbbbbbbbbb"}
    yt8m.write_ids(tmp_path, yt8m.read_ids(tmp_path))  # the download compacts before appending
    yt8m.append_ids(tmp_path, [("k-_1", "ccccccccccc"), ("Ab3x", "ddddddddddd")])  # a later answer wins
    assert yt8m.read_ids(tmp_path) == {"Ab3x": "ddddddddddd", "Zz09": "bbbbbbbbbbb", "k-_1": "ccccccccccc"}
    yt8m.append_ids(tmp_path, [("Zz09", "../../etc")])
    with pytest.raises(DataError, match=r"video_ids\.csv: line 6: 'Zz09','../../etc' is not a pseudo id and a path-safe YouTube id"):
        yt8m.read_ids(tmp_path)


def test_lookup_answers_parse_only_for_their_own_id(tmp_path: Path) -> None:
    assert yt8m.lookup_answer("Ab3x", "dQw4w9WgXcQ") == 'i("Ab3x","dQw4w9WgXcQ");'
    assert yt8m.parse_lookup_answer('i("Ab3x","dQw4w9WgXcQ");\n', "Ab3x", "x.js") == "dQw4w9WgXcQ"
    assert yt8m.lookup_url("http://data.yt8m.org/2/j/i/{prefix}/{id}.js", "Ab3x") == "http://data.yt8m.org/2/j/i/Ab/Ab3x.js"
    with pytest.raises(DataError, match=r"x\.js: answers for id 'Zz09', expected 'Ab3x'"):
        yt8m.parse_lookup_answer('i("Zz09","dQw4w9WgXcQ");', "Ab3x", "x.js")
    with pytest.raises(DataError, match=r"is not a lookup answer"):
        yt8m.parse_lookup_answer("<html>rate limited</html>", "Ab3x", "x.js")
    with pytest.raises(DataError, match=r"youtube id"):
        yt8m.parse_lookup_answer('i("Ab3x","../../etc");', "Ab3x", "x.js")


def test_generated_corpus_is_in_the_real_layout_and_non_narrative(tmp_path: Path) -> None:
    cfg = config_mod.load(overrides=[f"paths.data={tmp_path}", "data.datasets=[youtube8m]"])
    root = generate.synthesize(cfg, progress=False)["youtube8m"]
    spec = cfg.data.synth.youtube8m
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert json.loads((root / layout.GENERATED).read_text()) == [f for f in files if f != layout.GENERATED]  # every file it wrote, recorded
    vocab = yt8m.read_vocabulary(root / layout.YOUTUBE8M_VOCABULARY)
    assert list(vocab.columns) == list(yt8m.VOCABULARY_COLUMNS) and len(vocab) == spec.classes
    records = [p.name for p in layout.youtube8m_records(root)]
    assert records == ["train0000.tfrecord", "train0001.tfrecord", "validate0000.tfrecord"]
    videos = yt8m.read_videos(root)
    assert len(videos) == spec.videos and videos["record_id"].str.fullmatch(r"[A-Za-z0-9]{4}").all()
    assert (videos["youtube_id"].str.len() == 11).all()  # every pseudo id resolved through video_ids.csv
    served = {pid: yt8m.parse_lookup_answer(layout.youtube8m_lookup(root, pid).read_text(), pid, "x") for pid in videos["record_id"]}
    assert served == yt8m.read_ids(root)  # the site's answers, as the generator serves them
    assert all(layout.video_file(root, y).is_file() for y in videos["youtube_id"])
    assert 2.0 <= videos["labels"].map(len).mean() <= 4.0 and videos["labels"].map(lambda ls: max(ls) < spec.classes).all()
    train = videos[videos["split"] == "train"]
    counts = {i: sum(i in ls for ls in train["labels"]) for i in range(spec.classes)}
    assert vocab.set_index("Index")["TrainVideoCount"].to_dict() == counts

    captions = caption_json.read_howto100m_captions(root / layout.YOUTUBE8M_CAPTIONS)
    captioned = set(captions["video_id"])
    assert len(captioned) == spec.videos - round(spec.uncaptioned_rate * spec.videos)
    truth = noise_labels.read_noise_labels(root / layout.NOISE_LABELS)
    assert len(truth) == spec.videos * spec.segments_per_video
    scenes_with_text = truth[truth["video_id"].isin(captioned)]
    assert scenes_with_text["text_aligned"].mean() == pytest.approx(1 - spec.text_rate, abs=0.02)
    assert truth[~truth["video_id"].isin(captioned)]["text_aligned"].eq(1).all()
    assert truth["audio_aligned"].mean() == pytest.approx(1 - spec.audio_rate, abs=0.02)


def test_frame_level_records_read_their_context(tmp_path: Path) -> None:
    """Frame-level files hold tf.train.SequenceExample (context id + labels, per-second rgb/audio
    bytes): the same reader takes their ids and labels."""
    path = layout.youtube8m_record(tmp_path, "train", 7)
    path.parent.mkdir(parents=True)
    writer = tfrecord.TFRecordWriter(str(path))
    for vid, labels in (("Ab3x", [4, 9]), ("Zz09", [1])):
        frames = [bytes([k]) * 1024 for k in range(3)]
        writer.write({"id": (vid.encode(), "byte"), "labels": (labels, "int")},
                     {"rgb": (frames, "byte"), "audio": ([f[:128] for f in frames], "byte")})
    writer.close()
    from cmgh.data.io import tfrecord as ours

    _, lists = ours.parse_sequence_example(next(ours.read_records(path)))
    assert len(lists["rgb"]) == 3 and len(lists["audio"]) == 3  # really frame-level
    table = yt8m.read_records(path)
    assert table["record_id"].tolist() == ["Ab3x", "Zz09"] and table["labels"].tolist() == [[4, 9], [1]]


def test_an_id_of_the_wrong_type_says_so(tmp_path: Path) -> None:
    path = layout.youtube8m_record(tmp_path, "train", 0)
    record = yt8m.tfrecord.encode_example({"id": np.array([7], dtype=np.int64), "labels": np.array([1], dtype=np.int64)})
    yt8m.write_records(path, [record])
    with pytest.raises(DataError, match=r"record 0: feature 'id' is an int64 list, expected one id as a bytes list$"):
        yt8m.read_records(path)


def test_labels_outside_the_vocabulary_are_dropped_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from cmgh.data.datasets.items import WindowSpec
    from cmgh.data.datasets.youtube8m import youtube8m_items

    root = tmp_path / "youtube8m"
    _write_independently(layout.youtube8m_record(root, "train", 0), [("dQw4w9WgXcQ", [1, -5, 10**12]), ("aaaaaaaaaaa", [0])], 2017)
    vocabulary = pd.DataFrame([{c: "" for c in yt8m.VOCABULARY_COLUMNS} | {"Index": i, "TrainVideoCount": 1, "Name": n} for i, n in ((0, "a"), (1, "b"))])
    yt8m.write_vocabulary(root / layout.YOUTUBE8M_VOCABULARY, vocabulary)
    (root / layout.YOUTUBE8M_CAPTIONS).write_text("{}")  # no video has captions
    with caplog.at_level(logging.WARNING):
        items = youtube8m_items(root, WindowSpec(1.0, 1, 1))
    assert {i.meta["record_id"]: i.meta["labels"] for i in items} == {"dQw4w9WgXcQ": [1], "aaaaaaaaaaa": [0]}
    assert "2 labels are not in vocabulary.csv (e.g. train0000.tfrecord dQw4w9WgXcQ: -5; train0000.tfrecord dQw4w9WgXcQ: 1000000000000)" in caplog.text
