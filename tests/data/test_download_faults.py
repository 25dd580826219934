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

from cmgh.data.download import fetch
from cmgh.data.download.run import download
from tests.data.test_download import Server, make_config, manifest, policy, quiet, serve
from tests.data.test_download import server as server  # noqa: F401  (the fixture)
from tests.data.test_download import world as world  # noqa: F401  (the fixture)

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
    for limits in ({"timeout_seconds": 1.5}, {"timeout_seconds": 30, "item_timeout_seconds": 2}):
        cfg = make_config(tmp_path / str(len(limits)), server, world, retries=0, min_available=0.9, **limits)
        start = time.monotonic()
        report = download(cfg, "kinetics", progress=False, echo=quiet)
        elapsed = time.monotonic() - start
        rows = manifest(cfg, "kinetics")
        failed = rows[rows["status"] != "ok"]
        assert report.complete and report.available == report.selected - 1, report.text()
        assert list(failed["status"]) == ["timeout"] and failed["url"].iloc[0].endswith(slow), failed
        want = "item took longer than 2 s" if "item_timeout_seconds" in limits else "request timeout: fewer than 64 KiB in 1.5 s"
        assert want in failed["error"].iloc[0], failed["error"].iloc[0]
        assert elapsed < 30, elapsed
        assert not (cfg.path("data") / "kinetics" / failed["path"].iloc[0]).exists()
