"""Real-data acquisition against a real HTTP server on 127.0.0.1 (no internet, nothing mocked).

The server serves the tiny generated world as the real sources would (annotation CSV/JSON, zip
and tar.gz archives, one mp4 per video-site ID) and injects faults on request: HTTP errors, a
body cut mid-way, a stall, slow bodies. yt-dlp reaches the clips through its generic extractor.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from cmgh import config as config_mod
from cmgh import layout
from cmgh.data import datasets
from cmgh.data.datasets import audioset, kinetics
from cmgh.data.io import encode
from cmgh.data.extract import decoded
from cmgh.data.io import media
from cmgh.data.download import archives, clips, fetch
from cmgh.data.download.run import download
from cmgh.errors import DataError, DownloadError
from cmgh.io import sha256_file
from tests.helpers import tiny_overrides

REPO = Path(__file__).resolve().parents[3]
KINETICS_FILES = {"train.csv": "train.csv", "val.csv": "validate.csv", "test.csv": "test.csv"}  # served as -> saved as
FOUR = ("howto100m", "kinetics", "audioset", "msrvtt")  # YouTube-8M has its own tests (test_download_youtube8m.py)
TYPES = {".mp4": "video/mp4", ".csv": "text/csv", ".json": "application/json", ".zip": "application/zip", ".gz": "application/gzip"}


# --------------------------------------------------------------------------------------------
# the loopback server


class Server:
    """Files under ``root`` over HTTP/1.1 with Range support, and per-path scripted faults.

    ``faults[path]`` is a queue of behaviours consumed one per request: an HTTP status code
    ("404", "500", ...), "redirect:<url>" (a 302 there), "drop" (half the body, then the connection closes) or "stall" (headers,
    then silence). ``slow`` makes every body trickle (for the kill tests); a path in ``trickle``
    is sent one byte every ``trickle_seconds`` (a server that is never silent yet never done);
    ``types[path]`` overrides the Content-Type (an error page sent as ``text/html`` with 200).
    ``log`` keeps ``(path, Range header)`` of every GET.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.faults: dict[str, list[str]] = {}
        self.log: list[tuple[str, str | None]] = []
        self.slow = 0.0
        self.stall_seconds = 5.0
        self.trickle: set[str] = set()
        self.trickle_seconds = 0.5
        self.types: dict[str, str] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self.respond(head=True)

            def do_GET(self) -> None:
                self.respond(head=False)

            def respond(self, head: bool) -> None:
                path = self.path.split("?")[0]
                server.log.append((path, self.headers.get("Range")))
                queue = server.faults.get(path)
                fault = queue.pop(0) if queue else None
                if fault is not None and fault.startswith("redirect:"):  # a 302 to another URL (any scheme)
                    self.send_response(302)
                    self.send_header("Location", fault.removeprefix("redirect:"))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fault is not None and fault.isdigit():
                    self.send_response(int(fault))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                file = server.root / path.lstrip("/")
                if not file.is_file() or ".." in path:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = file.read_bytes()
                start = 0
                match = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
                if match and int(match.group(1)) >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if match:
                    start = int(match.group(1))
                    stop = int(match.group(2)) + 1 if match.group(2) else len(data)
                    body = data[start:stop]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{len(data)}")
                else:
                    body = data
                    self.send_response(200)
                self.send_header("Content-Type", server.types.get(path) or TYPES.get(file.suffix, "application/octet-stream"))
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if head:
                    return
                if fault == "stall":
                    time.sleep(server.stall_seconds)
                    return
                if path in server.trickle:
                    for i in range(len(body)):
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(server.trickle_seconds)
                    return
                if fault == "drop":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if server.slow:
                    for i in range(0, len(body), 4096):
                        self.wfile.write(body[i : i + 4096])
                        self.wfile.flush()
                        time.sleep(server.slow)
                    return
                self.wfile.write(body)

        class Quiet(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:  # clients that hang up are the point
                pass

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def gets(self, path: str) -> list[str | None]:
        """Range headers of the GETs of ``path`` so far."""
        return [rng for p, rng in self.log if p == path]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "srv")
    srv.root.mkdir()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


# --------------------------------------------------------------------------------------------
# the served world: the tiny generated datasets, packaged like the real sources


def _padded_source(clip: Path, dest: Path, lead: float, fps: int, sample_rate: int) -> None:
    """A 'YouTube video' holding ``clip`` from ``lead`` seconds, with 1 s of black after it."""
    info = media.probe(clip)
    n = int(round(info["duration"] * fps))
    frames = media.decode_video(clip, 0.0, n, fps)
    wave = media.decode_audio(clip, 0.0, n / fps, sample_rate)
    black = np.zeros((int(lead * fps), *frames.shape[1:]), np.uint8)
    tail = np.zeros((fps, *frames.shape[1:]), np.uint8)
    audio = np.concatenate([np.zeros(int(lead * sample_rate), np.float32), wave, np.zeros(sample_rate, np.float32)])
    encode.write_mp4(dest, np.concatenate([black, frames, tail]), fps, audio, sample_rate)


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def world(tiny_world: config_mod.Config, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Served files (built once per module) and the windows each clip must be cut to."""
    data, out = tiny_world.path("data"), tmp_path_factory.mktemp("served")
    media_cfg = tiny_world.data.synth.media
    fps, rate = int(media_cfg.fps), int(media_cfg.sample_rate)
    windows: dict[str, tuple[Path, float]] = {}  # served source -> (original clip, lead seconds)

    howto = out / "howto100m"
    (howto / "clips").mkdir(parents=True)
    _zip(howto / "HowTo100M.zip", {"README.txt": b"HowTo100M\n", "HowTo100M_v1.csv": (data / "howto100m" / "HowTo100M_v1.csv").read_bytes(),
                                   "caption.json": (data / "howto100m" / "caption.json").read_bytes()})
    for video in (data / "howto100m" / "videos").glob("*.mp4"):
        (howto / "clips" / video.name).write_bytes(video.read_bytes())

    kin = out / "kinetics"
    (kin / "clips").mkdir(parents=True)
    for i, (served, filename) in enumerate(KINETICS_FILES.items()):
        table = kinetics.read_kinetics(data / "kinetics" / "annotations" / filename)
        original = [kinetics.kinetics_clip_path(data / "kinetics", row) for row in table.itertuples(index=False)]
        table["time_start"] = [1 + (i + k) % 3 for k in range(len(table))]
        table["time_end"] = table["time_start"] + 2
        kinetics.write_kinetics(kin / served, table)
        for row, clip in zip(table.itertuples(index=False), original, strict=True):
            _padded_source(clip, kin / "clips" / f"{row.youtube_id}.mp4", row.time_start, fps, rate)
            windows[f"kinetics/{kinetics.kinetics_clip_path('', row)}"] = (clip, float(row.time_start))

    aus = out / "audioset"
    (aus / "clips").mkdir(parents=True)
    (aus / "class_labels_indices.csv").write_bytes((data / "audioset" / "class_labels_indices.csv").read_bytes())
    for filename in ("balanced_train_segments.csv", "eval_segments.csv"):
        table = audioset.read_audioset_segments(data / "audioset" / filename)
        original = [audioset.audioset_clip_path(data / "audioset", row) for row in table.itertuples(index=False)]
        table["start_seconds"] = [float(1 + k % 3) for k in range(len(table))]
        table["end_seconds"] = table["start_seconds"] + 2.0
        audioset.write_audioset_segments(aus / filename, table)
        for row, clip in zip(table.itertuples(index=False), original, strict=True):
            _padded_source(clip, aus / "clips" / f"{row.YTID}.mp4", row.start_seconds, fps, rate)
            windows[f"audioset/clips/{row.YTID}_{int(row.start_seconds)}.mp4"] = (clip, row.start_seconds)

    msr = out / "msrvtt"
    msr.mkdir()
    _tar(msr / "msrvtt_data.tar.gz", {"msrvtt_data/MSRVTT_data.json": (data / "msrvtt" / "videodatainfo.json").read_bytes(),
                                      "msrvtt_data/MSRVTT_JSFUSION_test.csv": (data / "msrvtt" / "MSRVTT_JSFUSION_test.csv").read_bytes()})
    videos = {f"MSRVTT/videos/all/{p.name}": p.read_bytes() for p in sorted((data / "msrvtt" / "videos").glob("*.mp4"))}
    _zip(msr / "MSRVTT.zip", {"MSRVTT/README.txt": b"MSR-VTT videos\n", **videos})
    return {"dir": out, "windows": windows, "fps": fps, "rate": rate, "data": data}


def sources(url: str, world_dir: Path) -> dict[str, Any]:
    """``data.download`` pointing at the loopback server, like config/paper.yaml points at the real hosts."""
    def sha(rel: str) -> str | None:  # pinned where the file is served (as a real source may publish it)
        return sha256_file(world_dir / rel) if (world_dir / rel).is_file() else None

    return {
        "workers": 2, "retries": 2, "backoff_seconds": 0.05, "timeout_seconds": 5, "min_available": 1.0,
        "howto100m": {
            "annotations": [{"url": f"{url}/howto100m/HowTo100M.zip", "sha256": sha("howto100m/HowTo100M.zip"),
                             "members": {"HowTo100M_v1.csv": "HowTo100M_v1.csv", "caption.json": "caption.json"}}],
            "clip_url": f"{url}/howto100m/clips/{{id}}.mp4",
        },
        "kinetics": {
            "annotations": [{"url": f"{url}/kinetics/{served}", "sha256": sha(f"kinetics/{served}"), "save_as": f"annotations/{name}"}
                            for served, name in KINETICS_FILES.items()],
            "clip_url": f"{url}/kinetics/clips/{{id}}.mp4",
        },
        "audioset": {
            "annotations": [{"url": f"{url}/audioset/{name}", "save_as": name}
                            for name in ("balanced_train_segments.csv", "eval_segments.csv", "class_labels_indices.csv")],
            "clip_url": f"{url}/audioset/clips/{{id}}.mp4",
        },
        "msrvtt": {
            "annotations": [{"url": f"{url}/msrvtt/msrvtt_data.tar.gz",
                             "members": {"MSRVTT_data.json": "videodatainfo.json", "MSRVTT_JSFUSION_test.csv": "MSRVTT_JSFUSION_test.csv"}}],
            "clip_archives": [{"url": f"{url}/msrvtt/MSRVTT.zip", "sha256": sha("msrvtt/MSRVTT.zip")}],
        },
    }


def make_config(root: Path, server: Server, world: dict[str, Any], **download: Any) -> config_mod.Config:
    tree = config_mod.apply_overrides({}, tiny_overrides(root))
    tree["data"]["source"] = "download"
    tree["data"]["download"] = {**sources(server.url, server.root), **download}
    return config_mod.from_dict(tree)


def serve(server: Server, world: dict[str, Any], *names: str) -> None:
    import shutil

    for name in names:
        shutil.copytree(world["dir"] / name, server.root / name)


def manifest(cfg: config_mod.Config, name: str) -> pd.DataFrame:
    return pd.read_csv(cfg.path("data") / name / layout.DOWNLOAD_MANIFEST, keep_default_na=False).set_index("item_id")


def quiet(*_: Any) -> None:
    pass


# --------------------------------------------------------------------------------------------
# end to end: the four datasets, then the same extraction as on generated data


def test_four_datasets_land_in_the_layout_and_extract(tmp_path: Path, server: Server, world: dict[str, Any]) -> None:
    serve(server, world, "howto100m", "kinetics", "audioset", "msrvtt")
    cfg = make_config(tmp_path, server, world)
    data, fps = cfg.path("data"), world["fps"]
    for name in FOUR:
        report = download(cfg, name, progress=False, echo=quiet)
        assert report.complete and report.available == report.selected > 0, report.text()
        assert (data / name / layout.STAMP).is_file() and (data / name / layout.DOWNLOAD_SUMMARY).is_file()
        assert set(manifest(cfg, name)["status"]) == {"ok"}

    # annotations: byte-identical to what the server holds (plain files and archive members)
    original = world["data"]
    for rel in ["howto100m/HowTo100M_v1.csv", "howto100m/caption.json", "msrvtt/videodatainfo.json",
                "msrvtt/MSRVTT_JSFUSION_test.csv", "audioset/class_labels_indices.csv"]:
        assert (data / rel).read_bytes() == (original / rel).read_bytes(), rel
    for served, name in KINETICS_FILES.items():
        assert (data / "kinetics" / "annotations" / name).read_bytes() == (server.root / "kinetics" / served).read_bytes()
    # uncut media keep their bytes; cut clips last their window to within one frame and show the clip
    for video in (original / "howto100m" / "videos").glob("*.mp4"):
        assert (data / "howto100m" / "videos" / video.name).read_bytes() == video.read_bytes()
    assert len(list((data / "msrvtt" / "videos").glob("*.mp4"))) == len(list((original / "msrvtt" / "videos").glob("*.mp4")))
    for rel, (clip, _lead) in world["windows"].items():
        got = data / rel
        info = media.probe(got)
        assert abs(info["duration"] - 2.0) <= 1.0 / fps + 1e-6, (rel, info)
        want = media.decode_video(clip, 0.0, 8, fps).astype(float)
        cut = media.decode_video(got, 0.0, 8, fps).astype(float)
        assert np.abs(cut - want).mean() < 6.0, rel  # the right window (black padding would differ by ~100)
        assert np.abs(media.decode_audio(got, 0.2, 1.0, 8000) - media.decode_audio(clip, 0.2, 1.0, 8000)).max() < 0.1, rel

    # a re-run fetches nothing: every clip is in place
    before = len(server.log)
    assert download(cfg, "kinetics", progress=False, echo=quiet).complete
    assert len(server.log) == before

    decoded.build_vocab(cfg)
    for name in FOUR:
        decoded.extract(cfg, name)
        status = pd.read_csv(decoded.feature_dir(cfg, name) / "manifest.csv")["status"]
        assert (status == "ok").all(), (name, status.value_counts())


def test_dry_run_lists_and_writes_nothing_then_slices_by_class_and_limit(tmp_path: Path, server: Server, world: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    serve(server, world, "kinetics")
    cfg = make_config(tmp_path, server, world)
    root = cfg.path("data") / "kinetics"
    download(cfg, "kinetics", dry_run=True)
    assert "annotation\tfetch" in capsys.readouterr().out and not root.exists() and not server.log
    download(cfg, "kinetics", annotations_only=True, echo=quiet)
    table = kinetics.read_kinetics(root / "annotations" / "train.csv")
    label = table["label"].iloc[0]
    lines: list[str] = []
    download(cfg, "kinetics", dry_run=True, classes=[label], limit=1, echo=lines.append)
    clips_listed = [line.split("\t") for line in lines if line.startswith("clip\tfetch")]
    assert len(clips_listed) == 3 and {c[4].split("/")[0] for c in clips_listed} == {"train", "val", "test"}  # 1 per split
    assert all(c[4].split("/")[1] == kinetics.kinetics_label_dir(label) for c in clips_listed)
    assert not list(root.glob("train/**/*.mp4"))
    report = download(cfg, "kinetics", classes=[label], limit=1, progress=False, echo=quiet)
    assert report.selected == 3 and report.complete
    assert sorted(manifest(cfg, "kinetics").query("kind == 'clip'")["path"]) == sorted(c[4] for c in clips_listed)
    with pytest.raises(DataError, match="--classes 'no such class' names no clip"):
        download(cfg, "kinetics", classes=["no such class"], echo=quiet)


# --------------------------------------------------------------------------------------------
# faults, one each


def ytdlp_opts(timeout: float) -> dict[str, Any]:
    return clips.ytdlp_options(SimpleNamespace(ytdlp_format="best[ext=mp4]/best", cookies=None), timeout)


def policy(**kw: Any) -> fetch.Policy:
    return fetch.Policy(**{"retries": 2, "backoff": 0.01, "timeout": 2.0, **kw})


def test_404_is_unavailable_and_the_run_reports_instead_of_failing(tmp_path: Path, server: Server, world: dict[str, Any]) -> None:
    serve(server, world, "kinetics")
    gone = sorted((server.root / "kinetics" / "clips").glob("*.mp4"))[:2]
    for path in gone:
        path.unlink()
    server.faults[f"/kinetics/clips/{gone[1].name}"] = ["403"] * 3  # a private video
    (server.root / "kinetics" / "clips" / gone[1].name).write_bytes(b"x")
    cfg = make_config(tmp_path, server, world, min_available=0.8)
    report = download(cfg, "kinetics", progress=False, echo=quiet)
    table = manifest(cfg, "kinetics")
    bad = table[table["status"] != "ok"]
    assert sorted(bad["status"]) == ["private", "unavailable"] and report.complete
    assert bad["error"].str.contains("HTTP Error 40[34]").all()
    summary = pd.read_csv(cfg.path("data") / "kinetics" / layout.DOWNLOAD_SUMMARY)
    assert summary.set_index(["kind", "status"])["count"].to_dict() == {("annotation", "ok"): 3, ("clip", "ok"): report.selected - 2,
                                                                         ("clip", "unavailable"): 1, ("clip", "private"): 1}
    before = len(server.log)  # a re-run does not retry what is gone for good, unless asked
    download(cfg, "kinetics", progress=False, echo=quiet)
    assert len(server.log) == before
    with pytest.raises(DownloadError, match=r"kinetics: \d+ of \d+ clips available .* below the minimum 100 %"):
        download(cfg, "kinetics", progress=False, echo=quiet, min_available=1.0, retry_all=True)
    assert not (cfg.path("data") / "kinetics" / layout.STAMP).exists() and len(server.log) > before

    server.faults["/kinetics/val.csv"] = ["404"]
    (cfg.path("data") / "kinetics" / "annotations" / "validate.csv").unlink()
    with pytest.raises(DownloadError, match=r"annotation .*/kinetics/val.csv: unavailable \(HTTP 404"):
        download(cfg, "kinetics", progress=False, echo=quiet)
    assert manifest(cfg, "kinetics").loc["annotations/validate.csv", "status"] == "unavailable"


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/x.bin"])
def test_a_redirect_to_another_scheme_is_refused_for_what_it_is(tmp_path: Path, server: Server, target: str) -> None:
    (server.root / "r.bin").write_bytes(b"x" * 10)
    server.faults["/r.bin"] = [f"redirect:{target}"]
    with pytest.raises(fetch.FetchError) as info:
        fetch.fetch(f"{server.url}/r.bin", tmp_path / "r.bin", policy=policy())
    assert info.value.status == "unsafe url" and target in str(info.value) and "expected http or https" in str(info.value)
    assert "dropped" not in str(info.value) and not (tmp_path / "r.bin").exists() and len(server.gets("/r.bin")) == 1  # not retried


def test_500_then_success_is_retried_with_backoff(tmp_path: Path, server: Server) -> None:
    (server.root / "a.bin").write_bytes(os.urandom(50_000))
    server.faults["/a.bin"] = ["500", "503"]
    got = fetch.fetch(f"{server.url}/a.bin", tmp_path / "a.bin", policy=policy())
    assert got.path.read_bytes() == (server.root / "a.bin").read_bytes() and len(server.gets("/a.bin")) == 3
    server.faults["/a.bin"] = ["500"] * 3
    with pytest.raises(fetch.FetchError) as info:
        fetch.fetch(f"{server.url}/a.bin", tmp_path / "b.bin", policy=policy())
    assert info.value.status == "server error" and not (tmp_path / "b.bin").exists()
    # and through yt-dlp: the clip loop retries the same way
    (server.root / "v.mp4").write_bytes(_tiny_mp4(tmp_path))
    server.faults["/v.mp4"] = ["500"]
    deadline = fetch.Deadline(None)
    opts = ytdlp_opts(2)
    path = fetch.retrying(lambda: clips.fetch_video(f"{server.url}/v.mp4", tmp_path, "v", opts, deadline, None), policy(), "v")
    assert path.read_bytes() == (server.root / "v.mp4").read_bytes()


def _tiny_mp4(tmp_path: Path) -> bytes:
    encode.write_mp4(tmp_path / "t.mp4", np.full((8, 32, 32, 3), 99, np.uint8), 8, np.zeros(8000, np.float32), 8000)
    return (tmp_path / "t.mp4").read_bytes()


def test_dropped_connection_resumes_with_a_range_request(tmp_path: Path, server: Server) -> None:
    payload = os.urandom(300_000)
    (server.root / "big.bin").write_bytes(payload)
    server.faults["/big.bin"] = ["drop"]
    got = fetch.fetch(f"{server.url}/big.bin", tmp_path / "big.bin", hashlib.sha256(payload).hexdigest(), policy=policy())
    assert got.path.read_bytes() == payload and got.bytes == len(payload)
    first, second = server.gets("/big.bin")
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", second or "").group(1))  # type: ignore[union-attr]
    assert first is None and 0 < resumed_at <= len(payload) // 2  # what arrived before the drop was kept
    # a part file left by an earlier process is continued, not restarted
    (tmp_path / "again.bin.part").write_bytes(payload[:1000])
    fetch.fetch(f"{server.url}/big.bin", tmp_path / "again.bin", policy=policy())
    assert (tmp_path / "again.bin").read_bytes() == payload and server.gets("/big.bin")[-1] == "bytes=1000-"


def test_ytdlp_part_file_that_is_already_whole_is_started_over(tmp_path: Path, server: Server) -> None:
    # Killed between yt-dlp's last byte and its rename: its range request gets 416 and yt-dlp gives up.
    data = _tiny_mp4(tmp_path)
    (server.root / "v.mp4").write_bytes(data)
    (tmp_path / "v.mp4.part").write_bytes(data)
    opts = ytdlp_opts(2)
    path = fetch.retrying(lambda: clips.fetch_video(f"{server.url}/v.mp4", tmp_path, "v", opts, fetch.Deadline(None), None), policy(), "v")
    assert path.read_bytes() == data and server.gets("/v.mp4")[-1] is None


def test_wrong_checksum_is_reported_and_leaves_nothing(tmp_path: Path, server: Server, world: dict[str, Any]) -> None:
    (server.root / "f.csv").write_bytes(b"a,b\n1,2\n")
    with pytest.raises(fetch.FetchError) as info:
        fetch.fetch(f"{server.url}/f.csv", tmp_path / "f.csv", "0" * 64, policy=policy())
    assert info.value.status == "checksum mismatch" and not list(tmp_path.glob("f.csv*"))
    serve(server, world, "msrvtt")
    cfg = make_config(tmp_path / "run", server, world)
    bad = cfg.to_dict()
    bad["data"]["download"]["msrvtt"]["clip_archives"][0]["sha256"] = "f" * 64
    cfg = config_mod.from_dict(bad)
    with pytest.raises(DownloadError, match="0 of 10 clips available"):
        download(cfg, "msrvtt", progress=False, echo=quiet)
    assert set(manifest(cfg, "msrvtt").query("kind == 'clip'")["status"]) == {"checksum mismatch"}
    assert not (cfg.path("data") / "msrvtt" / "videos").exists() and not list(cfg.path("data").rglob("*.part"))


def test_archive_member_escaping_its_folder_rejects_the_archive(tmp_path: Path, server: Server, world: dict[str, Any]) -> None:
    evil = tmp_path / "evil.zip"
    _zip(evil, {"MSRVTT/videos/all/video0.mp4": b"fine", "../../escaped.mp4": b"bad"})
    with pytest.raises(fetch.FetchError, match="would be written outside") as info:
        archives.Archive(evil)
    assert info.value.status == "unsafe archive"
    for name in ("/etc/passwd", "a/../../b", "C:\\x", "..\\x"):
        with pytest.raises(fetch.FetchError):
            archives.check_name(evil, name)
    tgz = tmp_path / "evil.tar.gz"
    _tar(tgz, {"ok.txt": b"1", "../up.txt": b"2"})
    with pytest.raises(fetch.FetchError, match="up.txt"):
        archives.Archive(tgz)
    # through the driver: the clip archive is refused whole and nothing lands anywhere
    serve(server, world, "msrvtt")
    (server.root / "msrvtt" / "MSRVTT.zip").write_bytes(evil.read_bytes())
    cfg = make_config(tmp_path / "run", server, world)
    spec = cfg.to_dict()
    spec["data"]["download"]["msrvtt"]["clip_archives"][0]["sha256"] = None
    cfg = config_mod.from_dict(spec)
    with pytest.raises(DownloadError):
        download(cfg, "msrvtt", progress=False, echo=quiet)
    assert set(manifest(cfg, "msrvtt").query("kind == 'clip'")["status"]) == {"unsafe archive"}
    assert not list(tmp_path.rglob("escaped.mp4")) and not list(tmp_path.rglob("video0.mp4"))


def test_symlink_members_are_never_written(tmp_path: Path) -> None:
    path = tmp_path / "links.zip"
    with zipfile.ZipFile(path, "w") as zf:
        link = zipfile.ZipInfo("videos/video1.mp4")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
        zf.writestr("videos/video2.mp4", b"data")
    with archives.Archive(path) as archive:
        assert archive.files == ["videos/video2.mp4"]
        archive.extract({"videos/video1.mp4": tmp_path / "a", "videos/video2.mp4": tmp_path / "b"})
    assert not (tmp_path / "a").exists() and (tmp_path / "b").read_bytes() == b"data"


def test_ids_with_slash_or_dotdot_are_recorded_never_fetched(tmp_path: Path, server: Server, world: dict[str, Any]) -> None:
    serve(server, world, "kinetics")
    table = kinetics.read_kinetics(server.root / "kinetics" / "train.csv")
    table.loc[0, "youtube_id"] = "../../etc"
    table.loc[1, "youtube_id"] = "a/b"
    table.loc[2, "youtube_id"] = ".."
    kinetics.write_kinetics(server.root / "kinetics" / "train.csv", table)
    cfg = make_config(tmp_path, server, world, min_available=0.5)
    report = download(cfg, "kinetics", progress=False, echo=quiet)
    rows = manifest(cfg, "kinetics")
    invalid = rows[rows["status"] == "invalid id"]
    assert len(invalid) == 3 and (invalid["url"] == "").all() and invalid["error"].str.contains("not a safe file name").all()
    assert report.available == report.selected - 3
    assert not any(".." in path or "etc" in path or "a/b" in path for path, _ in server.log)
    assert not (tmp_path / "etc").exists() and not list(cfg.path("data").rglob("*etc*"))


def test_stalled_server_is_a_timeout(tmp_path: Path, server: Server) -> None:
    (server.root / "s.bin").write_bytes(b"x" * 10_000)
    server.stall_seconds = 3.0
    server.faults["/s.bin"] = ["stall", "stall"]
    start = time.monotonic()
    with pytest.raises(fetch.FetchError) as info:
        fetch.fetch(f"{server.url}/s.bin", tmp_path / "s.bin", policy=policy(retries=1, timeout=0.4))
    assert info.value.status == "timeout" and time.monotonic() - start < 2.5
    # so is a stalled yt-dlp download (its socket timeout, or the request clock its worker is held to)
    (server.root / "v.mp4").write_bytes(_tiny_mp4(tmp_path))
    server.faults["/v.mp4"] = ["stall"] * 2
    opts = ytdlp_opts(0.4)
    with pytest.raises(fetch.FetchError) as info:
        clips.fetch_video(f"{server.url}/v.mp4", tmp_path, "v", opts, fetch.Deadline(None), None)
    assert info.value.status == "timeout"
    # the per-item limit applies across retries and chunks
    server.slow = 0.2
    (server.root / "big.bin").write_bytes(b"y" * 100_000)
    with pytest.raises(fetch.FetchError, match="longer than 0.5 s"):
        fetch.fetch(f"{server.url}/big.bin", tmp_path / "big.bin", policy=policy(item_timeout=0.5))


# --------------------------------------------------------------------------------------------
# kill mid-way, then re-run: nothing half-written may pose as complete


# The CLI as a terminal user's Ctrl-C meets it: SIGINT at its default even when the test runner was
# started with it ignored (a background job of a non-interactive shell, nohup), which Python would honour.
DEFAULT_SIGINT = "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); runpy.run_module('cmgh', run_name='__main__', alter_sys=True)"


def _run_cli(configfile: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-c", DEFAULT_SIGINT, "data", "download", "--dataset", "kinetics", "--config", str(configfile), *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition: Any, seconds: float) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out waiting for the download to get going"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_download_leaves_no_fake_clip_and_a_rerun_finishes(tmp_path: Path, server: Server, world: dict[str, Any], sig: signal.Signals) -> None:
    serve(server, world, "kinetics")
    cfg = make_config(tmp_path, server, world, workers=2)
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(cfg.to_dict()))
    root = cfg.path("data") / "kinetics"
    server.slow = 0.05  # ~4 KB per 50 ms: each clip takes a while
    proc = _run_cli(configfile)
    finished = lambda: list(root.glob("*/*/*.mp4"))  # noqa: E731
    parts = lambda: list((root / ".download").glob("*.part"))  # noqa: E731
    _wait_for(lambda: finished() and parts(), 60)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted" in err, err
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (root / layout.STAMP).exists()
    resumable = {p.name.split(".")[0] for p in parts() if p.stat().st_size}
    done = finished()
    assert 0 < len(done) < 16
    for clip in done:  # whatever carries a final name is a whole, decodable, correctly cut clip
        assert abs(clips.check_clip(clip)["duration"] - 2.0) <= 1.0 / world["fps"] + 1e-6
    server.slow = 0.0
    try:
        report = download(cfg, "kinetics", progress=False, echo=quiet)
    except DownloadError:
        pytest.fail(manifest(cfg, "kinetics").query("status != 'ok'").to_string())
    assert report.complete and report.available == report.selected == 16
    assert set(manifest(cfg, "kinetics")["status"]) == {"ok"} and not list((root / ".download").glob("*.part"))
    for stem in resumable:  # yt-dlp continued the part file of a clip it was fetching
        ytid = stem.rsplit("_", 2)[0]
        assert any(rng and rng != "bytes=0-" for rng in server.gets(f"/kinetics/clips/{ytid}.mp4")), (stem, server.gets(f"/kinetics/clips/{ytid}.mp4"), [(i, r.status, r.error) for i, r in manifest(cfg, "kinetics").iterrows() if ytid in i])


# --------------------------------------------------------------------------------------------
# the pieces


def test_cut_is_exact_to_a_frame_keeps_sync_and_reencodes_when_asked(tmp_path: Path) -> None:
    fps, rate, seconds = 8, 16000, 6
    frames = np.stack([np.full((48, 80, 3), 5 * i, np.uint8) for i in range(fps * seconds)])  # frame i has value 5 i
    t = np.arange(rate * seconds) / rate
    audio = (0.1 * (1 + np.floor(t))).astype(np.float32) * np.sign(np.sin(2 * np.pi * 200 * t)).astype(np.float32)  # louder each second
    source = encode.write_mp4(tmp_path / "src.mp4", frames, fps, audio, rate)
    for start, end, out_fps, short, want_frames, want_size in [
        (1.5, 3.5, None, None, 16, (80, 48)),
        (2.0, 4.0, 5.0, 24, 10, (40, 24)),
        (4.0, 9.0, None, None, 16, (80, 48)),  # the video ends at 6 s: the clip is shorter, never padded
        (0.0, None, None, None, 48, (80, 48)),
    ]:
        out = tmp_path / "cut.mp4"
        assert clips.cut(source, out, start, end, out_fps, short) == want_frames
        info = clips.check_clip(out)
        duration = (min(end, seconds) if end is not None else seconds) - start
        assert abs(info["duration"] - duration) <= 1.0 / (out_fps or fps) + 1e-6
        assert (info["width"], info["height"]) == want_size and info["sample_rate"] == rate
        first = media.decode_video(out, 0.0, 1, out_fps or fps)[0].astype(float).mean()
        assert abs(first - 5 * round(start * fps)) < 2.5, (start, first)  # the frame on screen at `start`
        level = np.abs(media.decode_audio(out, 0.6, 0.3, rate)).mean()  # 0.6-0.9 s into the clip
        assert abs(level - 0.1 * (1 + np.floor(start + 0.6))) < 0.03, (start, level)


@pytest.mark.parametrize("message,status", [
    ("[youtube] x: Private video. Sign in if you've been granted access", "private"),
    ("[youtube] x: Video unavailable. This video has been removed by the uploader", "unavailable"),
    ("[youtube] x: Sign in to confirm you're not a bot", "rate limited"),
    ("[youtube] x: Sign in to confirm your age", "private"),
    ("[generic] x: Unable to download webpage: HTTP Error 404: Not Found", "unavailable"),
    ("[generic] x: Unable to download webpage: HTTP Error 503: Service Unavailable", "server error"),
    ("[download] Got error: Read timed out.", "timeout"),
    ("something new", "error"),
])
def test_ytdlp_messages_map_to_manifest_statuses(message: str, status: str) -> None:
    assert clips.ytdlp_status(message) == status


def test_download_config_names_what_is_missing(tmp_path: Path) -> None:
    from cmgh import cli, config
    from cmgh.data.download.sources import check_config

    assert datasets.names() is datasets.names()  # one list of names (the registry), no copy to drift
    parser = cli.build_parser()  # the CLI offers the same names
    assert [parser.parse_args(["data", "synth", "--dataset", name]).dataset for name in datasets.names()] == [[name] for name in datasets.names()]
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "synth", "--dataset", "nosuchset"])
    assert datasets.names() == config.choices("data.datasets")  # ... and it is the schema's
    # Where downloads are planned (the workflow at parse time, `cmgh data download` per dataset),
    # not where configs load: cmgh.config stands below cmgh.data.
    base = [*tiny_overrides(tmp_path), "data.source=download"]
    missing = config_mod.load(overrides=base)
    with pytest.raises(config_mod.ConfigError, match=r"^data.download.howto100m.annotations: empty"):
        check_config(missing)
    with pytest.raises(config_mod.ConfigError, match=r"^data.download.howto100m.annotations: empty"):
        download(missing, "howto100m", dry_run=True, echo=lambda _: None)
    assert not (missing.path("data") / "howto100m").exists()  # refused before anything is written
    ok = 'data.download.kinetics.annotations=[{url: "https://x/train.csv", save_as: annotations/train.csv}]'
    with pytest.raises(config_mod.ConfigError, match=r"kinetics.clip_url: 'https://x/v' is not an http\(s\) URL template containing \{id\}"):
        check_config(config_mod.load(overrides=[*base, "data.datasets=[kinetics]", ok, "data.download.kinetics.clip_url=https://x/v"]))
    with pytest.raises(config_mod.ConfigError, match="save_as"):  # the schema's part: checked on load
        config_mod.load(overrides=[*base, "data.datasets=[kinetics]", 'data.download.kinetics.annotations=[{url: "https://x", save_as: ../up.csv}]'])
    cfg = config_mod.load(overrides=[*base, "data.datasets=[kinetics]", ok, "data.download.kinetics.clip_url=https://x/{id}"])
    check_config(cfg)
    assert cfg.data.download.kinetics.clip_url == "https://x/{id}"
    probe = "import sys, cmgh.config; print(sorted(m for m in sys.modules if m.startswith('cmgh.data')))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert loaded.stdout.strip() == "[]"  # the config loader imports nothing above it


def test_journal_survives_a_torn_line_and_merges_into_the_manifest(tmp_path: Path) -> None:
    from cmgh.data.download.manifest import Manifest, Row

    first = Manifest(tmp_path)
    first.record(Row("clip", "a", "u", "p/a.mp4", "ok", "", 10, "f" * 64))
    first.record(Row("clip", "b", "u", "p/b.mp4", "timeout", "no data, for 60 s", 0, ""))
    with open(first.journal, "a") as fh:
        fh.write("clip,c,u,p/c.mp4,o")  # killed mid-line
    again = Manifest(tmp_path).load()
    assert set(again.rows) == {("clip", "a"), ("clip", "b")} and again.get("clip", "b").error == "no data, for 60 s"
    again.record(Row("clip", "b", "u", "p/b.mp4", "ok", "", 5, "e" * 64))
    again.save()
    table = pd.read_csv(tmp_path / layout.DOWNLOAD_MANIFEST)
    assert list(table["status"]) == ["ok", "ok"] and first.journal.stat().st_size == 0
