"""Servers that answer slowly or with the wrong thing (issue 13), against the real loopback server.

A server that trickles bytes (never silent, never done) must hit the per-request and per-item
time limits; an annotation or a clip that is not what was asked (an HTML page sent with 200, a
truncated CSV, JSON of another layout) is never recorded ``ok``; and a download reads only the
sources of the datasets it was asked for.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from cmgh import cli, layout
from cmgh import config as config_mod
from cmgh.data.datasets import kinetics
from cmgh.data.download import fetch
from cmgh.data.download.run import download
from cmgh.errors import DownloadError
from tests.data.download.test_download import Server, make_config, manifest, policy, quiet, serve
from tests.data.download.test_download import server as server  # noqa: F401  (the fixture)
from tests.data.download.test_download import world as world  # noqa: F401  (the fixture)

HTML = b"<!DOCTYPE html>\n<html><head><title>Service unavailable</title></head><body>Try again later.</body></html>\n"


def _first_clip(server: Server) -> str:
    return f"/kinetics/clips/{sorted((server.root / 'kinetics' / 'clips').glob('*.mp4'))[0].name}"


# --------------------------------------------------------------------------------------------
# case 1: a trickling server meets the time limits


def test_trickling_server_hits_the_request_timeout_and_the_item_timeout(tmp_path: Path, server: Server) -> None:
    (server.root / "t.bin").write_bytes(b"z" * 50_000)  # at 2 bytes a second: seven hours
    (server.root / "t.txt").write_bytes(b'i("abcd","dQw4w9WgXcQ");')
    server.trickle |= {"/t.bin", "/t.txt"}
    # no item limit: the request itself must deliver its bytes in time
    start = time.monotonic()
    with pytest.raises(fetch.FetchError) as info:
        fetch.fetch(f"{server.url}/t.bin", tmp_path / "t.bin", policy=policy(retries=1, timeout=1.0))
    elapsed = time.monotonic() - start
    assert info.value.status == "timeout" and "/t.bin" in info.value.reason and elapsed < 4.0, (elapsed, info.value)
    assert not (tmp_path / "t.bin").exists()
    # a generous request timeout, a short item limit: the item limit holds, between chunks or not
    start = time.monotonic()
    with pytest.raises(fetch.FetchError, match=r"longer than 1\.5 s"):
        fetch.get_text(f"{server.url}/t.txt", policy=policy(timeout=30.0, item_timeout=1.5))
    assert time.monotonic() - start < 3.0


def test_trickling_clip_server_fails_the_clip_and_the_run_goes_on(tmp_path: Path, server: Server, world: dict[str, Any]) -> None:
    serve(server, world, "kinetics")
    slow = _first_clip(server)
    server.trickle.add(slow)
    for limits in ({"timeout_seconds": 2}, {"timeout_seconds": 30, "item_timeout_seconds": 5}):
        cfg = make_config(tmp_path / str(len(limits)), server, world, retries=0, min_available=0.9, **limits)
        start = time.monotonic()
        report = download(cfg, "kinetics", progress=False, echo=quiet)
        elapsed = time.monotonic() - start
        rows = manifest(cfg, "kinetics")
        failed = rows[rows["status"] != "ok"]
        assert report.complete and report.available == report.selected - 1, report.text()
        assert list(failed["status"]) == ["timeout"] and failed["url"].iloc[0].endswith(slow), failed
        want = "item took longer than 5 s" if "item_timeout_seconds" in limits else "request timeout: fewer than 64 KiB in 2 s"
        assert want in failed["error"].iloc[0], failed["error"].iloc[0]
        assert elapsed < 30, elapsed
        assert not (cfg.path("data") / "kinetics" / failed["path"].iloc[0]).exists()


# --------------------------------------------------------------------------------------------
# case 2: what the server sent is checked before it is recorded ok


def _truncated(text: bytes) -> bytes:
    return text[: text.rindex(b"\n", 0, len(text) - 1) - 3]  # the last line cut short


@pytest.mark.parametrize("what", ["html", "truncated", "layout"])
def test_annotation_that_is_not_what_was_asked_is_never_recorded_ok(tmp_path: Path, server: Server, world: dict[str, Any], what: str) -> None:
    serve(server, world, "kinetics", "msrvtt")
    if what == "html":  # an error page with status 200
        name, served, saved, expected = "kinetics", "/kinetics/val.csv", "annotations/validate.csv", "is an HTML page, not a Kinetics annotation CSV (header label,"
        original = (server.root / "kinetics" / "val.csv").read_bytes()
        (server.root / "kinetics" / "val.csv").write_bytes(HTML)
        server.types[served] = "text/html"
    elif what == "truncated":
        name, served, saved, expected = "kinetics", "/kinetics/train.csv", "annotations/train.csv", "is not a Kinetics annotation CSV (header label,"
        original = (server.root / "kinetics" / "train.csv").read_bytes()
        (server.root / "kinetics" / "train.csv").write_bytes(_truncated(original))
    else:  # an archive member that is JSON, not MSR-VTT's layout
        import io
        import tarfile

        name, served, saved, expected = "msrvtt", "/msrvtt/msrvtt_data.tar.gz", "videodatainfo.json", "missing key 'videos'"
        original = (server.root / "msrvtt" / "msrvtt_data.tar.gz").read_bytes()
        with tarfile.open(fileobj=io.BytesIO(original)) as tf:
            members = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isreg()}  # type: ignore[union-attr]
        members["msrvtt_data/MSRVTT_data.json"] = b'{"info": {}, "sentences": []}'
        from tests.data.download.test_download import _tar

        _tar(server.root / "msrvtt" / "msrvtt_data.tar.gz", members)
    tree = make_config(tmp_path, server, world).to_dict()
    for source in tree["data"]["download"]["kinetics"]["annotations"]:
        source["sha256"] = None  # as Kinetics publishes none: only the content can tell
    cfg = config_mod.from_dict(tree)
    root = cfg.path("data") / name
    with pytest.raises(DownloadError) as info:
        download(cfg, name, progress=False, echo=quiet)
    message = str(info.value)
    assert "\n" not in message and served in message and saved in message and expected in message, message
    assert not (root / saved).exists() and not (root / layout.STAMP).exists()
    rows = manifest(cfg, name)
    bad = rows[rows["path"].str.contains(saved, regex=False)]
    assert len(bad) == 1 and bad["status"].iloc[0] == "corrupt", rows
    assert not list(root.glob("**/*.mp4"))  # no clip fetched on the strength of a bad list
    # the server is fixed: the re-run fetches the file again and finishes
    if what == "layout":
        (server.root / "msrvtt" / "msrvtt_data.tar.gz").write_bytes(original)
    else:
        (server.root / served.lstrip("/")).write_bytes(original)
        server.types.pop(served, None)
    before = len(server.gets(served))
    report = download(cfg, name, progress=False, echo=quiet)
    assert report.complete and len(server.gets(served)) == before + 1
    assert set(manifest(cfg, name)["status"]) == {"ok"}


def test_clip_answered_as_html_is_never_recorded_ok(tmp_path: Path, server: Server, world: dict[str, Any]) -> None:
    serve(server, world, "kinetics")
    html_as_video, html_page = _first_clip(server), f"/kinetics/clips/{sorted((server.root / 'kinetics' / 'clips').glob('*.mp4'))[1].name}"
    for path in (html_as_video, html_page):
        (server.root / path.lstrip("/")).write_bytes(HTML)
    server.types[html_page] = "text/html"
    cfg = make_config(tmp_path, server, world, min_available=0.8)
    report = download(cfg, "kinetics", progress=False, echo=quiet)
    rows = manifest(cfg, "kinetics").query("kind == 'clip'")
    failed = rows[rows["status"] != "ok"]
    assert report.available == report.selected - 2 and len(failed) == 2, failed
    assert sorted(u.rsplit("/", 1)[1] for u in failed["url"]) == sorted(p.rsplit("/", 1)[1] for p in (html_as_video, html_page))
    assert not any((cfg.path("data") / "kinetics" / p).exists() for p in failed["path"])


# --------------------------------------------------------------------------------------------
# case 3: one dataset's download needs that dataset's sources only


def test_download_of_one_dataset_needs_only_its_own_sources(tmp_path: Path, server: Server, world: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    serve(server, world, "kinetics")
    tree = make_config(tmp_path, server, world).to_dict()
    for other in ("howto100m", "audioset", "msrvtt", "youtube8m"):
        tree["data"]["download"].pop(other, None)
    assert "howto100m" in tree["data"]["datasets"]  # the default list: HowTo100M is a dataset of the run
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(tree))
    assert config_mod.load(configfile).data.download.howto100m.annotations == []
    code = cli.main(["data", "download", "--dataset", "kinetics", "--config", str(configfile)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "kinetics: 16 of 16 clips available" in out and "howto100m" not in err
    assert (tmp_path / "data" / "kinetics" / layout.STAMP).is_file() and not (tmp_path / "data" / "howto100m").exists()
    assert len(kinetics.read_kinetics(tmp_path / "data" / "kinetics" / "annotations" / "train.csv")) > 0
