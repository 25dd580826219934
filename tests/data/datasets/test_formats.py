"""Writers and readers of the four real annotation formats: round trips, exact bytes, and rejection."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cmgh.data import datasets
from cmgh.data.datasets import audioset, caption_json, howto100m, kinetics, msrvtt, noise_labels
from cmgh.errors import DataError


def test_howto100m_round_trip(tmp_path: Path) -> None:
    videos = pd.DataFrame(
        {"video_id": ["abcDEF12345", "Zz_-0123456"], "category_1": ["Food and Entertaining", "Hobbies and Crafts"],
         "category_2": ["Recipes", "Crafts"], "rank": [3, 27], "task_id": [11, 42]}
    )  # fmt: skip
    howto100m.write_howto100m_videos(tmp_path / "HowTo100M_v1.csv", videos)
    assert (tmp_path / "HowTo100M_v1.csv").read_text().splitlines()[0] == "video_id,category_1,category_2,rank,task_id"
    pd.testing.assert_frame_equal(howto100m.read_howto100m_videos(tmp_path / "HowTo100M_v1.csv"), videos)

    captions = {"Zz_-0123456": {"start": [2.5, 0.0], "end": [4.0, 2.5], "text": ["then the kettle", "so we blarp"]},
                "abcDEF12345": {"start": [0.0], "end": [1.25], "text": ["now, \"quoted\" text"]}}  # fmt: skip
    caption_json.write_howto100m_captions(tmp_path / "caption.json", captions)
    assert json.loads((tmp_path / "caption.json").read_text()) == captions
    table = caption_json.read_howto100m_captions(tmp_path / "caption.json")
    assert list(table.columns) == ["video_id", "start", "end", "text"]
    assert table["video_id"].tolist() == ["Zz_-0123456", "Zz_-0123456", "abcDEF12345"]  # sorted by video, then start
    assert table["start"].tolist() == [0.0, 2.5, 0.0] and table["text"].tolist()[0] == "so we blarp"

    labels = pd.DataFrame({"video_id": ["abcDEF12345"] * 2, "clip_start": [0.0, 2.0], "clip_end": [2.0, 4.0],
                           "audio_aligned": [1, 0], "text_aligned": [0, 1]})  # fmt: skip
    noise_labels.write_noise_labels(tmp_path / "noise_labels.csv", labels)
    pd.testing.assert_frame_equal(noise_labels.read_noise_labels(tmp_path / "noise_labels.csv"), labels)


def test_kinetics_round_trip_and_paths(tmp_path: Path) -> None:
    table = pd.DataFrame({"label": ["abseiling", "playing bagpipes"], "youtube_id": ["0wR5jVB-WPk", "6rUf6ZlMsXE"],
                          "time_start": [417, 12], "time_end": [427, 22], "split": ["val", "val"]})  # fmt: skip
    path = kinetics.write_kinetics(tmp_path / "annotations" / "validate.csv", table)
    assert path.read_text() == (
        "label,youtube_id,time_start,time_end,split\nabseiling,0wR5jVB-WPk,417,427,val\nplaying bagpipes,6rUf6ZlMsXE,12,22,val\n"
    )
    back = kinetics.read_kinetics(path)
    pd.testing.assert_frame_equal(back, table)
    row = next(back.itertuples(index=False))
    assert kinetics.kinetics_clip_path(tmp_path, row) == tmp_path / "val" / "abseiling" / "0wR5jVB-WPk_000417_000427.mp4"
    assert kinetics.kinetics_clip_path(tmp_path, back.iloc[1]).parent.name == "playing_bagpipes"
    evil = kinetics.kinetics_clip_path(tmp_path, {**table.iloc[0].to_dict(), "label": "../../etc"})
    assert evil.resolve().is_relative_to(tmp_path.resolve())


@pytest.mark.parametrize("ytid", ["../x", "a/b", "..", "", ".hidden", "a\x00b", "x" * 201])
def test_kinetics_clip_path_rejects_unsafe_ids(tmp_path: Path, ytid: str) -> None:
    row = {"label": "abseiling", "youtube_id": ytid, "time_start": 0, "time_end": 10, "split": "train"}
    with pytest.raises(DataError, match="youtube_id"):
        kinetics.kinetics_clip_path(tmp_path, row)


@pytest.mark.parametrize("ytid", ["--PJHxphWEs", "_8ZTH2f3vKc", "-0CMnp02rNY"])
def test_real_youtube_ids_with_leading_dash_or_underscore_are_safe(tmp_path: Path, ytid: str) -> None:
    row = {"label": "abseiling", "youtube_id": ytid, "time_start": 0, "time_end": 10, "split": "train"}
    assert kinetics.kinetics_clip_path(tmp_path, row) == tmp_path / "train" / "abseiling" / f"{ytid}_000000_000010.mp4"


def test_audioset_segments_exact_layout_and_round_trip(tmp_path: Path) -> None:
    table = pd.DataFrame({"YTID": ["--PJHxphWEs", "a0b1c2d3e4f"], "start_seconds": [30.0, 0.0], "end_seconds": [40.0, 10.0],
                          "positive_labels": [["/m/09x0r", "/t/dd00088"], ["/m/0jbk"]]})  # fmt: skip
    path = audioset.write_audioset_segments(tmp_path / "eval_segments.csv", table)
    lines = path.read_text().splitlines()
    assert lines[0] == f"# Segments csv created {audioset.AUDIOSET_CREATED}"
    assert lines[1] == "# num_ytids=2, num_segs=2, num_unique_labels=3, num_positive_labels=3"
    assert lines[2] == "# YTID, start_seconds, end_seconds, positive_labels"
    assert lines[3] == '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"'
    pd.testing.assert_frame_equal(audioset.read_audioset_segments(path), table)


def test_audioset_classes_round_trip_and_clip_paths(tmp_path: Path) -> None:
    classes = pd.DataFrame({"index": [0, 1], "mid": ["/m/09x0r", "/m/05zppz"], "display_name": ["Speech", "Male speech, man speaking"]})
    path = audioset.write_audioset_classes(tmp_path / "class_labels_indices.csv", classes)
    assert path.read_text().splitlines()[2] == '1,/m/05zppz,"Male speech, man speaking"'
    pd.testing.assert_frame_equal(audioset.read_audioset_classes(path), classes)

    row = {"YTID": "a0b1c2d3e4f", "start_seconds": 30.0}
    assert audioset.audioset_clip_path(tmp_path, row) == tmp_path / "clips" / "a0b1c2d3e4f_30.mp4"
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a0b1c2d3e4f_30.wav").write_bytes(b"")
    assert audioset.audioset_clip_path(tmp_path, row).suffix == ".wav"
    with pytest.raises(DataError, match="YTID"):
        audioset.audioset_clip_path(tmp_path, {"YTID": "../x", "start_seconds": 0})


def test_msrvtt_round_trip(tmp_path: Path) -> None:
    videos = pd.DataFrame({"video_id": ["video0", "video1"], "category": [9, 3], "url": ["https://www.youtube.com/watch?v=9lZi22qLlEo"] * 2,
                           "start_time": [137.72, 0.5], "end_time": [149.44, 2.5], "split": ["train", "test"], "id": [0, 1]})  # fmt: skip
    sentences = pd.DataFrame({"caption": ["a man is talking", "a blarp, in the kettle"], "video_id": ["video0", "video1"], "sen_id": [0, 1]})
    path = msrvtt.write_msrvtt_info(tmp_path / "videodatainfo.json", videos, sentences)
    raw = json.loads(path.read_text())
    assert raw["videos"][0]["start time"] == 137.72 and set(raw) == {"info", "videos", "sentences"}
    got_v, got_s = msrvtt.read_msrvtt_info(path)
    pd.testing.assert_frame_equal(got_v, videos)
    pd.testing.assert_frame_equal(got_s, sentences)

    test = pd.DataFrame({"key": ["ret0"], "vid_key": ["msr1"], "video_id": ["video1"], "sentence": ["a blarp, in the kettle"]})
    csv_path = msrvtt.write_msrvtt_test(tmp_path / "MSRVTT_JSFUSION_test.csv", test)
    pd.testing.assert_frame_equal(msrvtt.read_msrvtt_test(csv_path), test)
    indexed = tmp_path / "indexed.csv"  # pandas' default to_csv adds an unnamed index column
    test.to_csv(indexed)
    pd.testing.assert_frame_equal(msrvtt.read_msrvtt_test(indexed), test)


def test_dataset_root(tiny_config) -> None:
    assert datasets.dataset_root(tiny_config, "kinetics") == tiny_config.path("data") / "kinetics"
    with pytest.raises(DataError, match="unknown"):
        datasets.dataset_root(tiny_config, "ucf101")


# ---------------------------------------------------------------------------- malformed input

AUDIOSET_HEAD = "# Segments csv created x\n# num_ytids=2\n# YTID, start_seconds, end_seconds, positive_labels\n"


@pytest.mark.parametrize(
    ("name", "text", "reader", "pattern"),
    [
        ("seg.csv", AUDIOSET_HEAD + 'aaa, 0.000, 10.000, "/m/a1"\nbbb, thirty, 40.000, "/m/a1"\n', audioset.read_audioset_segments,
         r"seg\.csv: line 5: field 'start_seconds': 'thirty' is not a number"),
        ("seg.csv", AUDIOSET_HEAD + 'aaa, 0.000, 10.000, "music"\n', audioset.read_audioset_segments,
         r"seg\.csv: line 4: field 'positive_labels': 'music'"),
        ("seg.csv", AUDIOSET_HEAD + "aaa, 0.000, 10.000\n", audioset.read_audioset_segments,
         r"seg\.csv: line 4: 3 fields, expected 4"),
        ("k.csv", "label,youtube_id,time_start,time_end,split\nx,abc,1,11,train\nx,abc,1.5,11,train\n", kinetics.read_kinetics,
         r"k\.csv: line 3: field 'time_start': '1.5' is not an integer"),
        ("k.csv", "label,youtube_id,time_start,time_end,split\nx,abc,1,11,training\n", kinetics.read_kinetics,
         r"k\.csv: line 2: field 'split': 'training' is not one of train, val, test"),
        ("k.csv", "label,youtube_id,start,end,split\n", kinetics.read_kinetics, r"k\.csv: line 1: header"),
        ("k.csv", "label,youtube_id,time_start,time_end,split\n,abc,1,11,train\n", kinetics.read_kinetics,
         r"k\.csv: line 2: field 'label': '' is not a non-empty string"),
        ("n.csv", "video_id,clip_start,clip_end,audio_aligned,text_aligned\nv,0,2,1,yes\n", noise_labels.read_noise_labels,
         r"n\.csv: line 2: field 'text_aligned': 'yes' is not 0 or 1"),
        ("v.csv", "video_id,category_1,category_2,rank,task_id\nv,a,b,first,3\n", howto100m.read_howto100m_videos,
         r"v\.csv: line 2: field 'rank': 'first'"),
        ("c.csv", "index,mid,display_name\n0,/m/a1,\"A\"\n1,/m/a1,\"B\"\n", audioset.read_audioset_classes,
         r"c\.csv: line 3: field 'mid': '/m/a1' is not unique"),
        ("t.csv", "key,vid_key,video_id,sentence\nret0,msr1,,hello\n", msrvtt.read_msrvtt_test,
         r"t\.csv: line 2: field 'video_id'"),
    ],
)  # fmt: skip
def test_csv_readers_reject_malformed_rows(tmp_path: Path, name: str, text: str, reader, pattern: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=pattern):
        reader(path)


@pytest.mark.parametrize(
    ("payload", "pattern"),
    [
        ({"info": {}, "videos": []}, r"info\.json: missing key 'sentences'"),
        ({"videos": [], "sentences": {}}, r"info\.json: 'sentences' is a dict, expected a list"),
        ({"videos": [{"video_id": "video0", "category": 1, "url": "", "start time": "soon", "end time": 2, "split": "train", "id": 0}],
          "sentences": []}, r"info\.json: videos\[0\]: field 'start time': 'soon' is not a number"),
        ({"videos": [{"video_id": "video0", "category": 1, "url": "", "start time": 0, "end time": 2, "split": "dev", "id": 0}],
          "sentences": []}, r"videos\[0\]: field 'split': 'dev' is not one of train, validate, test"),
        ({"videos": [], "sentences": [{"caption": "x", "video_id": "video0"}]}, r"sentences\[0\]: missing field 'sen_id'"),
    ],
)  # fmt: skip
def test_msrvtt_reader_rejects_malformed_json(tmp_path: Path, payload: dict, pattern: str) -> None:
    path = tmp_path / "info.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(DataError, match=pattern):
        msrvtt.read_msrvtt_info(path)


def test_json_readers_report_syntax_and_structure(tmp_path: Path) -> None:
    path = tmp_path / "caption.json"
    path.write_text('{"v1": {"start": [0.0],\n "end": [1.0], "text": ["a"]')
    with pytest.raises(DataError, match=r"caption\.json: line 2 column \d+: not valid JSON"):
        caption_json.read_howto100m_captions(path)
    path.write_text(json.dumps({"v1": {"start": [0.0, 1.0], "end": [1.0], "text": ["a"]}}))
    with pytest.raises(DataError, match=r"\['v1'\]: start/end/text have lengths 2/1/1"):
        caption_json.read_howto100m_captions(path)
    path.write_text(json.dumps({"v1": {"start": ["0"], "end": [1.0], "text": ["a"]}}))
    with pytest.raises(DataError, match=r"\['v1'\]\[0\]: field 'start': '0' is not a number of seconds"):
        caption_json.read_howto100m_captions(path)


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train\.csv: missing"):
        kinetics.read_kinetics(tmp_path / "train.csv")
    with pytest.raises(DataError, match=r"videodatainfo\.json: missing"):
        msrvtt.read_msrvtt_info(tmp_path / "videodatainfo.json")
