"""YouTube-8M's download against a real HTTP server on 127.0.0.1 (no internet, nothing mocked).

The served world is a tiny generated YouTube-8M packaged as the dataset's sites serve it: download
plans (JSON of file name -> MD5) with the record files under the download script's names
(``trainaa.tfrecord``), the pseudo-id lookup answering ``i("<id>","<youtube id>");``, and a watch
page per video whose ``<track>`` carries its captions (VTT, one as json3), which real yt-dlp
fetches through its generic extractor.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cmgh import config as config_mod
from cmgh import layout
from cmgh.data.datasets import caption_json, youtube8m, youtube8m_format as yt8m
from cmgh.data.datasets.items import WindowSpec
from cmgh.data.download import fetch, records
from cmgh.data.io import tfrecord
from cmgh.data.download.run import download
from cmgh.errors import ConfigError, DownloadError
from tests.helpers import tiny_overrides
from tests.data.download.test_download import Server, make_config, manifest, policy, quiet
from tests.data.download.test_download import server as server  # noqa: F401  (the fixture)

SPLITS = ("train", "validate")


def _stamp(seconds: float) -> str:
    millis = round(seconds * 1000)
    return f"{millis // 3_600_000:02d}:{millis // 60_000 % 60:02d}:{millis // 1000 % 60:02d}.{millis % 1000:03d}"


def vtt(entry: dict[str, list[Any]]) -> str:
    """Plain WebVTT, one cue per caption segment."""
    cues = [f"{_stamp(s)} --> {_stamp(e)}\n{t}\n" for s, e, t in zip(entry["start"], entry["end"], entry["text"], strict=True)]
    return "WEBVTT\nKind: captions\nLanguage: en\n\n" + "\n".join(cues)


def json3(entry: dict[str, list[Any]]) -> str:
    events = [{"tStartMs": round(s * 1000), "dDurationMs": round((e - s) * 1000), "segs": [{"utf8": t}]}
              for s, e, t in zip(entry["start"], entry["end"], entry["text"], strict=True)]
    return json.dumps({"wireMagic": "pb3", "events": events})


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A generated YouTube-8M (8 short videos, 2 of them without captions) and the files serving it."""
    from cmgh.data.synth.generate import synthesize

    base = tmp_path_factory.mktemp("yt8m")
    cfg = config_mod.load(overrides=[*tiny_overrides(base), "data.datasets=[youtube8m]", "data.synth.youtube8m.videos=8",
                                     "data.synth.youtube8m.segments_per_video=2", "data.synth.youtube8m.segment_seconds=1.0"])
    synthesize(cfg, progress=False)
    data = cfg.path("data") / "youtube8m"
    out = base / "served" / "youtube8m"
    for folder in ("plans", "watch", "media", "subs"):
        (out / folder).mkdir(parents=True)
    shutil.copy(data / layout.YOUTUBE8M_VOCABULARY, out / "vocabulary.csv")
    shutil.copytree(data / layout.YOUTUBE8M_LOOKUP_DIR, out / "j" / "i")  # the lookup's URLs mirror the stored answers
    names = list(records.FILE_NUMBER)
    for split in SPLITS:
        plan: dict[str, str] = {}
        (out / "video" / split).mkdir(parents=True)
        for path in layout.youtube8m_records(data):
            if yt8m.record_split(path) == split:
                served = f"{split}{names[int(path.stem.removeprefix(split))]}{layout.YOUTUBE8M_RECORD_SUFFIX}"  # train0001 -> trainab
                shutil.copy(path, out / "video" / split / served)
                plan[served] = md5(path)
        (out / "plans" / f"video_{split}.json").write_text(json.dumps({"files": plan}))
    captions = json.loads((data / layout.YOUTUBE8M_CAPTIONS).read_text())
    videos = yt8m.read_videos(data)
    assert (videos["youtube_id"] != "").all() and 0 < len(captions) < len(videos)
    first = next(y for y in videos["youtube_id"] if y in captions)  # served as json3, the others as VTT
    for ytid in videos["youtube_id"]:
        shutil.copy(layout.video_file(data, ytid), out / "media" / f"{ytid}.mp4")
        track = ""
        if ytid in captions:
            name = f"{ytid}.en.json3" if ytid == first else f"{ytid}.en.vtt"
            (out / "subs" / name).write_text(json3(captions[ytid]) if ytid == first else vtt(captions[ytid]))
            track = f'<track kind="captions" src="/youtube8m/subs/{name}" srclang="en" label="English">'
        (out / "watch" / f"{ytid}.html").write_text(
            f'<!DOCTYPE html>\n<html><head><title>{ytid}</title></head><body><video src="/youtube8m/media/{ytid}.mp4">{track}</video></body></html>\n')
    return {"dir": out, "data": data, "videos": videos, "captions": captions, "json3": first}


def sources(url: str) -> dict[str, Any]:
    """``data.download.youtube8m`` pointing at the loopback server, as config/paper.yaml points at data.yt8m.org."""
    site = f"{url}/youtube8m"
    return {
        "annotations": [{"url": f"{site}/vocabulary.csv", "save_as": layout.YOUTUBE8M_VOCABULARY}],
        "records": [{"plan": f"{site}/plans/video_{split}.json", "url": f"{site}/video/{split}", "split": split} for split in SPLITS],
        "id_lookup": f"{site}/j/i/{{prefix}}/{{id}}.js",
        "clip_url": f"{site}/watch/{{id}}.html",
        "caption_langs": ["en"],
    }


def yt8m_config(root: Path, server: Server, world: dict[str, Any], **spec: Any) -> config_mod.Config:
    return make_config(root, server, world, youtube8m={**sources(server.url), **spec})


def serve(server: Server, world: dict[str, Any]) -> Path:
    shutil.copytree(world["dir"], server.root / "youtube8m")
    return server.root / "youtube8m"


def served_record(site: Path, split: str, number: int) -> Path:
    return site / "video" / split / f"{split}{list(records.FILE_NUMBER)[number]}{layout.YOUTUBE8M_RECORD_SUFFIX}"


# --------------------------------------------------------------------------------------------
# the pieces


def test_plan_names_map_to_the_download_scripts_numbers(tmp_path: Path) -> None:
    assert len(records.FILE_NUMBER) == 3844 and records.record_number("trainaa.tfrecord", "train", "p") == 0
    assert records.record_number("train00.tfrecord", "train", "p") == 52 * 62 + 52  # '0' follows a-z, A-Z
    assert records.record_number("validateZ9.tfrecord", "validate", "p") == 51 * 62 + 61
    for name, split in [("train00.tfrecord", "test"), ("train0.tfrecord", "train"), ("train_0.tfrecord", "train"), ("../aa.tfrecord", "train")]:
        with pytest.raises(DownloadError, match=rf"^p: file .* is not named {split}XX.tfrecord"):
            records.record_number(name, split, "p")
    plan = tmp_path / "plan.json"
    entry = {"url": "http://h/2/video/train/", "split": "train", "max_files": 2}
    plan.write_text(json.dumps({"files": {"trainab.tfrecord": "A" * 32, "trainaa.tfrecord": "b" * 32, "trainac.tfrecord": "c" * 32}}))
    files = records.read_plan(plan, entry, tmp_path, "p")  # the plan's order, max_files of them
    assert [(f.url, f.md5, f.target.name) for f in files] == [("http://h/2/video/train/trainab.tfrecord", "a" * 32, "train0001.tfrecord"),
                                                              ("http://h/2/video/train/trainaa.tfrecord", "b" * 32, "train0000.tfrecord")]
    for text, message in [("{", "not JSON"), ('{"files": {}}', "no 'files' object"), ('{"files": {"trainaa.tfrecord": "xyz"}}', "is not an MD5")]:
        plan.write_text(text)
        with pytest.raises(DownloadError, match=f"^p: .*{message}"):
            records.read_plan(plan, entry, tmp_path, "p")


def test_md5_is_checked_by_fetch_and_get_text_maps_http_errors(tmp_path: Path, server: Server) -> None:
    payload = b"record bytes " * 1000
    (server.root / "r.bin").write_bytes(payload)
    got = fetch.fetch(f"{server.url}/r.bin", tmp_path / "r.bin", md5=hashlib.md5(payload).hexdigest().upper(), policy=policy())
    assert got.sha256 == hashlib.sha256(payload).hexdigest() and got.path.read_bytes() == payload
    with pytest.raises(fetch.FetchError, match=r"md5 of .*/r.bin is [0-9a-f]{32}, expected 0{32}") as info:
        fetch.fetch(f"{server.url}/r.bin", tmp_path / "s.bin", hashlib.sha256(payload).hexdigest(), md5="0" * 32, policy=policy())
    assert info.value.status == "checksum mismatch" and not list(tmp_path.glob("s.bin*"))
    (server.root / "a.js").write_text('i("abcd","xyz");')
    server.faults["/a.js"] = ["503"]
    assert fetch.get_text(f"{server.url}/a.js", policy=policy()) == 'i("abcd","xyz");' and len(server.gets("/a.js")) == 2
    with pytest.raises(fetch.FetchError) as info:
        fetch.get_text(f"{server.url}/none.js", policy=policy())
    assert info.value.status == "unavailable" and len(server.gets("/none.js")) == 1  # permanent: not retried
    (server.root / "big.js").write_bytes(b"x" * 5000)
    with pytest.raises(fetch.FetchError, match="more than 100 bytes") as info:
        fetch.get_text(f"{server.url}/big.js", policy=policy(), limit=100)
    assert info.value.status == "corrupt"


def test_config_checks_name_the_field(tmp_path: Path, server: Server, world: dict[str, Any]) -> None:
    cfg = yt8m_config(tmp_path, server, world, records=[])
    with pytest.raises(ConfigError, match=r"^data.download.youtube8m.records: empty"):
        download(cfg, "youtube8m", dry_run=True, echo=quiet)
    twice = [{"plan": "http://h/p.json", "url": "http://h/v", "split": "train"}] * 2
    with pytest.raises(ConfigError, match=r"^data.download.youtube8m.records\[1\].split: 'train' is listed twice"):
        download(yt8m_config(tmp_path, server, world, records=twice), "youtube8m", dry_run=True, echo=quiet)
    with pytest.raises(ConfigError, match=r"^data.download.youtube8m.id_lookup: 'http://h/x.js' has no \{id\}"):
        download(yt8m_config(tmp_path, server, world, id_lookup="http://h/x.js"), "youtube8m", dry_run=True, echo=quiet)
    serve(server, world)  # 2018 pseudo ids and no lookup: refused once the records show them
    with pytest.raises(ConfigError, match=r"^data.download.youtube8m.id_lookup: not set, but the records hold 2018 pseudo ids \(e.g. '.{4}'\)"):
        download(yt8m_config(tmp_path, server, world, id_lookup=None), "youtube8m", annotations_only=True, progress=False, echo=quiet)


# --------------------------------------------------------------------------------------------
# the index: record files and the id lookup, with faults


def test_index_lands_in_the_layout_with_resume_checksums_and_unknown_ids(tmp_path: Path, server: Server, world: dict[str, Any]) -> None:
    site = serve(server, world)
    videos = world["videos"]
    unknown = videos["record_id"].iloc[0]  # the first video of train0000
    (site / "j" / "i" / unknown[:2] / f"{unknown}.js").unlink()  # the lookup does not know this one: 404
    broken = served_record(site, "train", 1)
    plan_path = site / "plans" / "video_train.json"
    plan = json.loads(plan_path.read_text())
    plan["files"][broken.name] = "0" * 32  # the served file does not match its plan
    plan_path.write_text(json.dumps(plan))
    cfg = yt8m_config(tmp_path, server, world)
    root = cfg.path("data") / "youtube8m"

    report = download(cfg, "youtube8m", annotations_only=True, progress=False, echo=quiet)
    assert report.records == (3, 2)
    rows = manifest(cfg, "youtube8m")
    assert rows.loc["train0001.tfrecord", "status"] == "checksum mismatch" and "md5" in rows.loc["train0001.tfrecord", "error"]
    assert not list((root / layout.YOUTUBE8M_RECORDS_DIR).glob("train0001*"))  # no file, no part file
    for number, split in [(0, "train"), (0, "validate")]:
        assert layout.youtube8m_record(root, split, number).read_bytes() == layout.youtube8m_record(world["data"], split, number).read_bytes()
    assert rows.loc["train0000.tfrecord", ["kind", "status", "path"]].tolist() == ["record", "ok", "video/train0000.tfrecord"]
    # every pseudo id of the records on disk was looked up once; the unknown one is unavailable
    in_records = yt8m.read_videos(root)["record_id"]
    asked = [Path(p).stem for p, _ in server.log if p.startswith("/youtube8m/j/i/")]
    assert sorted(asked) == sorted(in_records) and len(in_records) == 5
    assert rows.loc[unknown, "kind"] == "lookup" and rows.loc[unknown, "status"] == "unavailable"
    assert "the id lookup does not know pseudo id" in rows.loc[unknown, "error"] and "404" in rows.loc[unknown, "error"]
    assert rows.query("kind == 'lookup'").index.tolist() == [unknown]  # answers that worked are their own record
    resolved = yt8m.read_videos(root).set_index("record_id")["youtube_id"]
    truth = videos.set_index("record_id")["youtube_id"]
    assert resolved[unknown] == "" and (resolved.drop(unknown) == truth[resolved.drop(unknown).index]).all()
    assert yt8m.read_ids(root) == {pid: yt for pid, yt in yt8m.read_ids(world["data"]).items() if pid in set(in_records) - {unknown}}

    # a re-run asks again only for what failed and may work now: the broken record (still broken);
    # the video of the unknown id inherits the lookup's status; one clip per split
    layout.youtube8m_record(root, "validate", 0).write_bytes(b"not the plan's file")  # MD5 checked: fetched again
    before = len(server.log)
    with pytest.raises(DownloadError, match=r"youtube8m: 2 of 3 record files available \(66.7 %\), below the minimum 100 %"):
        download(cfg, "youtube8m", limit=1, progress=False, echo=quiet)
    assert {p for p, _ in server.log[before:] if not re.match(r"/youtube8m/(watch|media|subs)/", p)} == {
        f"/youtube8m/video/train/{broken.name}", "/youtube8m/video/validate/validateaa.tfrecord"}
    assert layout.youtube8m_record(root, "validate", 0).read_bytes() == layout.youtube8m_record(world["data"], "validate", 0).read_bytes()
    assert not (root / layout.STAMP).exists()
    clip_rows = manifest(cfg, "youtube8m").query("kind == 'clip'")
    assert clip_rows.loc[unknown, "status"] == "unavailable" and "does not know" in clip_rows.loc[unknown, "error"]
    assert clip_rows.loc[videos["record_id"].iloc[-1], "status"] == "ok"  # the validate video


def test_record_dropped_mid_body_resumes_with_a_range_request(tmp_path: Path, server: Server, world: dict[str, Any]) -> None:
    # Bigger than a few 64 KiB chunks (a drop loses at most the chunk in flight): 2017-release
    # records, YouTube ids under video_id, so no lookup either.
    site = serve(server, world)
    rng = np.random.default_rng(0)
    ids = [f"v{n:010d}" for n in range(60)]
    examples = [yt8m.encode_video(i, [n % 4], rng.normal(size=yt8m.RGB_DIM), rng.normal(size=yt8m.AUDIO_DIM), release=2017) for n, i in enumerate(ids)]
    served = yt8m.write_records(site / "video" / "test" / "testaa.tfrecord", examples)
    (site / "plans" / "video_test.json").write_text(json.dumps({"files": {served.name: md5(served)}}))
    server.faults[f"/youtube8m/video/test/{served.name}"] = ["drop"]
    entry = {"plan": f"{server.url}/youtube8m/plans/video_test.json", "url": f"{server.url}/youtube8m/video/test", "split": "test"}
    cfg = yt8m_config(tmp_path, server, world, records=[entry])
    root = cfg.path("data") / "youtube8m"
    download(cfg, "youtube8m", annotations_only=True, progress=False, echo=quiet)
    first, second = server.gets(f"/youtube8m/video/test/{served.name}")
    assert first is None and int(re.fullmatch(r"bytes=(\d+)-", second or "")[1]) >= 65536, second  # type: ignore[index]
    assert served.stat().st_size > 3 * 65536 and layout.youtube8m_record(root, "test", 0).read_bytes() == served.read_bytes()
    assert yt8m.read_videos(root)["youtube_id"].tolist() == ids and not [p for p, _ in server.log if "/j/i/" in p]


@pytest.mark.parametrize("damage", ["data_crc", "huge_length", "empty"])
def test_a_record_file_matching_its_md5_is_ok_only_once_read_whole(tmp_path: Path, server: Server, world: dict[str, Any], damage: str) -> None:
    site = serve(server, world)
    served = served_record(site, "train", 0)
    good = served.read_bytes()
    if damage == "data_crc":
        bad = good[:20] + bytes([good[20] ^ 0xFF]) + good[21:]  # inside record 0's data: its checksum no longer matches
    elif damage == "huge_length":
        header = (2**40).to_bytes(8, "little")  # framed correctly: only the bytes left refute it
        bad = header + tfrecord._FOOTER.pack(tfrecord.masked_crc(header)) + good
    else:
        bad = b""
    served.write_bytes(bad)
    plan = site / "plans" / "video_train.json"
    files = json.loads(plan.read_text())["files"]
    plan.write_text(json.dumps({"files": {**files, served.name: md5(served)}}))  # the plan vouches for the damaged file
    cfg = yt8m_config(tmp_path, server, world)
    root = cfg.path("data") / "youtube8m"
    download(cfg, "youtube8m", annotations_only=True, progress=False, echo=quiet)
    row = manifest(cfg, "youtube8m").loc[layout.youtube8m_record(root, "train", 0).name]
    assert row["status"] == "corrupt" and row["error"].endswith("; deleted: the next run fetches it again"), row["error"]
    assert not layout.youtube8m_record(root, "train", 0).exists() and layout.youtube8m_record(root, "validate", 0).is_file()  # the rest went on
    download(cfg, "youtube8m", annotations_only=True, progress=False, echo=quiet)  # the next run fetches it again, and goes on
    assert len(server.gets(f"/youtube8m/video/train/{served.name}")) == 2
    assert manifest(cfg, "youtube8m").loc[layout.youtube8m_record(root, "train", 0).name, "status"] == "corrupt"


def test_an_unsafe_pseudo_id_is_invalid_in_the_download_and_the_features_manifests(tmp_path: Path, server: Server, world: dict[str, Any]) -> None:
    site = serve(server, world)
    rng = np.random.default_rng(0)
    examples = [yt8m.encode_video(i, [0], rng.normal(size=yt8m.RGB_DIM), rng.normal(size=yt8m.AUDIO_DIM)) for i in ("../x", "a/b")]
    served = yt8m.write_records(site / "video" / "test" / "testaa.tfrecord", examples)
    (site / "plans" / "video_test.json").write_text(json.dumps({"files": {served.name: md5(served)}}))
    entry = {"plan": f"{server.url}/youtube8m/plans/video_test.json", "url": f"{server.url}/youtube8m/video/test", "split": "test"}
    cfg = yt8m_config(tmp_path, server, world, records=[entry])
    with pytest.raises(DownloadError, match=r"0 of 2 clips available"):  # every clip invalid: the step fails after its manifest
        download(cfg, "youtube8m", progress=False, echo=quiet)
    rows = manifest(cfg, "youtube8m")
    for pseudo in ("../x", "a/b"):
        assert rows.loc[pseudo, "status"] == "invalid id" and "pseudo id" in rows.loc[pseudo, "error"]
    assert not [p for p, _ in server.log if "/j/i/" in p]  # nothing put into a URL
    root = cfg.path("data") / "youtube8m"
    unsafe = [i for i in youtube8m.youtube8m_items(root, WindowSpec.from_features(cfg.features)) if i.item_id in ("../x", "a/b")]
    assert [i.status.split(":")[0] for i in unsafe] == ["invalid id", "invalid id"]  # not "unavailable: no YouTube id"


def test_lookups_and_records_honour_the_rate_limit(tmp_path: Path, server: Server, world: dict[str, Any]) -> None:
    serve(server, world)
    cfg = yt8m_config(tmp_path, server, world, records=sources(server.url)["records"][:1])
    spec = cfg.to_dict()
    spec["data"]["download"]["rate_limit"] = 20.0
    start = time.monotonic()
    download(config_mod.from_dict(spec), "youtube8m", annotations_only=True, progress=False, echo=quiet)
    elapsed = time.monotonic() - start
    requests = len(server.log)  # vocabulary, plan, 2 record files, 7 lookups: at most 20 started per second
    assert requests == 11 and elapsed >= (requests - 1) / 20.0, (requests, elapsed)


def test_dry_run_lists_plans_records_lookups_and_clips_and_writes_nothing(tmp_path: Path, server: Server, world: dict[str, Any]) -> None:
    serve(server, world)
    cfg = yt8m_config(tmp_path, server, world)
    root = cfg.path("data") / "youtube8m"
    lines: list[str] = []
    download(cfg, "youtube8m", dry_run=True, echo=lines.append)
    assert [line.split("\t")[:2] for line in lines if line.startswith("plan")] == [["plan", "fetch"]] * 2
    assert any("clips: listed from the record files" in line for line in lines)
    assert not root.exists() and not server.log
    download(cfg, "youtube8m", annotations_only=True, progress=False, echo=quiet)
    pid = world["videos"]["record_id"].iloc[0]
    yt8m.write_ids(root, {k: v for k, v in yt8m.read_ids(root).items() if k != pid})
    before = len(server.log)
    lines = []
    download(cfg, "youtube8m", dry_run=True, echo=lines.append)
    assert [line.split("\t")[:2] for line in lines if line.startswith("plan")] == [["plan", "present"]] * 2
    assert not [line for line in lines if line.startswith("record\t")]
    lookups = [line.split("\t") for line in lines if line.startswith("lookup\t")]
    assert lookups == [["lookup", "fetch", pid, yt8m.lookup_url(sources(server.url)["id_lookup"], pid), layout.YOUTUBE8M_IDS]]
    clips_listed = [line.split("\t") for line in lines if line.startswith("clip\t")]
    assert len(clips_listed) == len(world["videos"]) - 1 and all(c[1] == "fetch" and c[5] == "whole" for c in clips_listed)
    assert "/watch/" in clips_listed[0][3] and clips_listed[0][4].startswith("videos/")
    assert lines[-1].startswith("youtube8m: 8 clips selected: 7 fetch, 0 present, 1 lookup, 0 skip"), lines[-1]
    layout.youtube8m_record(root, "train", 1).unlink()
    lines = []
    download(cfg, "youtube8m", dry_run=True, echo=lines.append)
    assert [line.split("\t")[2:4] for line in lines if line.startswith("record\t")] == [
        [f"{server.url}/youtube8m/video/train/trainab.tfrecord", "video/train0001.tfrecord"]]
    assert len(server.log) == before and pid not in yt8m.read_ids(root) and not list(root.glob("videos/*"))


# --------------------------------------------------------------------------------------------
# end to end: records, lookups, videos and their captions, then a re-run that fetches nothing


def test_whole_download_ends_in_the_real_layout_with_captions(tmp_path: Path, server: Server, world: dict[str, Any]) -> None:
    site = serve(server, world)
    videos, generated = world["videos"], world["captions"]
    captioned = [y for y in videos["youtube_id"] if y in generated]
    broken = captioned[-1]  # a caption file that does not parse: the video stays, without text
    (site / "subs" / f"{broken}.en.vtt").write_text("WEBVTT\n\n00:00:01.000 --> 00:00:00.500\nbackwards\n")
    cfg = yt8m_config(tmp_path, server, world)
    root = cfg.path("data") / "youtube8m"

    report = download(cfg, "youtube8m", progress=False, echo=quiet)
    assert report.complete and report.available == report.selected == len(videos) and report.records == (3, 3), report.text()
    assert (root / layout.STAMP).is_file()
    # the real layout, read back by the dataset's own readers
    got = yt8m.read_videos(root)
    assert got[["record_id", "youtube_id", "split"]].equals(videos[["record_id", "youtube_id", "split"]])
    for ytid in videos["youtube_id"]:
        assert layout.video_file(root, ytid).read_bytes() == (site / "media" / f"{ytid}.mp4").read_bytes()
    # caption.json: every captioned video whose captions parse, with the generator's segment times
    want = {y: generated[y] for y in captioned if y != broken}
    assert json.loads((root / layout.YOUTUBE8M_CAPTIONS).read_text()) == want
    assert (root / layout.YOUTUBE8M_CAPTIONS).read_bytes() == caption_json.write_howto100m_captions(tmp_path / "want.json", dict(sorted(want.items()))).read_bytes()
    assert set(caption_json.read_howto100m_captions(root / layout.YOUTUBE8M_CAPTIONS)["video_id"]) == set(want)
    rows = manifest(cfg, "youtube8m").query("kind == 'clip'").set_index("path")
    notes = {ytid: rows.loc[f"videos/{ytid}.mp4", "error"] for ytid in videos["youtube_id"]}
    assert set(rows["status"]) == {"ok"}
    assert {y for y, note in notes.items() if note == "no captions"} == set(videos["youtube_id"]) - set(generated) != set()
    assert notes[broken].startswith("captions unreadable: ") and "before its start" in notes[broken]
    assert all(notes[y] == "" for y in want) and world["json3"] in want and server.gets(f"/youtube8m/subs/{world['json3']}.en.json3")
    assert not list((root / layout.DOWNLOAD_STAGING).glob("*.vtt")) and not list((root / layout.DOWNLOAD_STAGING).glob("*.json3"))
    assert not (root / layout.YOUTUBE8M_VIDEO_CAPTIONS_DIR / f"{broken}.json").exists()

    # a second run fetches nothing and writes the same caption.json
    before, text = len(server.log), (root / layout.YOUTUBE8M_CAPTIONS).read_bytes()
    assert download(cfg, "youtube8m", progress=False, echo=quiet).complete
    assert len(server.log) == before and (root / layout.YOUTUBE8M_CAPTIONS).read_bytes() == text


def test_failed_caption_download_keeps_the_video_without_text(tmp_path: Path, server: Server, world: dict[str, Any]) -> None:
    site = serve(server, world)
    ytid = next(y for y in world["videos"]["youtube_id"] if y in world["captions"] and y != world["json3"])
    server.faults[f"/youtube8m/subs/{ytid}.en.vtt"] = ["500"] * 3  # through yt-dlp's retries by our loop, then the video alone
    cfg = yt8m_config(tmp_path, server, world)
    root = cfg.path("data") / "youtube8m"
    assert download(cfg, "youtube8m", progress=False, echo=quiet).complete
    row = manifest(cfg, "youtube8m").query(f"path == 'videos/{ytid}.mp4'").iloc[0]
    assert row["status"] == "ok" and row["error"].startswith("captions not fetched (server error:") and "subtitles" in row["error"]
    assert len(server.gets(f"/youtube8m/subs/{ytid}.en.vtt")) == 3 and server.gets(f"/youtube8m/media/{ytid}.mp4")
    assert layout.video_file(root, ytid).read_bytes() == (site / "media" / f"{ytid}.mp4").read_bytes()
    assert ytid not in json.loads((root / layout.YOUTUBE8M_CAPTIONS).read_text())
