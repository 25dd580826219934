"""YouTube captions -> HowTo100M segments: the readers on hand-written files, and real yt-dlp on 127.0.0.1."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from cmgh.data.download import clips, fetch
from cmgh.data.download.captions import (
    find_captions,
    parse_json3,
    parse_vtt,
    read_captions,
    subtitle_failed,
    subtitle_options,
    to_caption_entry,
)
from cmgh.errors import ConfigError, DataError
from tests.data.download.test_download import Server, _tiny_mp4, ytdlp_opts

# What YouTube serves as automatic captions: each cue repeats the previous line above the new
# one, 10 ms carry cues hold the old line alone, the new line's words carry timing tags, a
# one-word line ("okay") has none, and after a pause the display starts afresh (the second "see you").
AUTO_VTT = """WEBVTT
Kind: captions
Language: en

00:00:00.030 --> 00:00:02.070 align:start position:0%
 
hi<00:00:00.359><c> everyone</c><00:00:00.780><c> welcome</c><00:00:01.020><c> back</c>

00:00:02.070 --> 00:00:02.080 align:start position:0%
hi everyone welcome back
 

00:00:02.080 --> 00:00:04.630 align:start position:0%
hi everyone welcome back
today<00:00:02.639><c.colorE5E5E5> we're</c><00:00:02.879><c> making</c><00:00:03.120><c>   bread</c>

00:00:04.630 --> 00:00:04.640 align:start position:0%
today we're making bread
 

00:00:04.640 --> 00:00:06.950 align:start position:0%
today we're making bread
[Music]

00:00:06.950 --> 00:00:06.960 align:start position:0%
[Music]
 

00:00:06.960 --> 00:00:09.150 align:start position:0%
[Music]
so<00:00:07.200><c> you</c><00:00:07.440><c> need</c><00:00:07.680><c> flour</c><00:00:08.000><c> &amp;</c><00:00:08.300><c> water</c>

00:00:09.150 --> 00:00:09.160 align:start position:0%
so you need flour &amp; water
 

00:00:09.160 --> 00:00:10.500 align:start position:0%
so you need flour &amp; water
okay

00:00:10.500 --> 00:00:10.510 align:start position:0%
okay
 

00:00:10.510 --> 00:00:11.000 align:start position:0%
okay
okay

00:00:11.000 --> 00:00:11.010 align:start position:0%
okay
 

00:00:11.010 --> 00:00:12.000 align:start position:0%
okay
see<00:00:11.500><c> you</c>

00:00:12.000 --> 00:00:12.010 align:start position:0%
see you
 

00:00:14.000 --> 00:00:15.000 align:start position:0%
 
see<00:00:14.500><c> you</c>

00:00:15.000 --> 00:00:15.010 align:start position:0%
see you
 
"""
AUTO_ENTRY = {
    "start": [0.03, 2.08, 4.64, 6.96, 9.16, 10.51, 11.01, 14.0],
    "end": [2.07, 4.63, 6.95, 9.15, 10.5, 11.0, 12.0, 15.0],
    "text": ["hi everyone welcome back", "today we're making bread", "[Music]", "so you need flour & water", "okay", "okay", "see you", "see you"],
}

# Human subtitles: no rolling, MM:SS.mmm timings, cue identifiers, STYLE and NOTE blocks, CRLF.
PLAIN_VTT = "\r\n".join([
    "WEBVTT - Cooking show",
    "",
    "STYLE",
    "::cue { color: yellow }",
    "",
    "NOTE written by hand",
    "over two lines",
    "",
    "1",
    "00:01.000 --> 00:04.500",
    "<v Chef>Welcome to the kitchen.</v>",
    "",
    "2",
    "00:05.000 --> 00:08.250 line:90%",
    "Today: <i>sourdough</i>",
    "&amp; a little  patience.",
    "",
    "",
    "intro-3",
    "01:00:08.250 --> 01:00:10.000",
    "No.",
    "",
    "01:00:10.000 --> 01:00:11.000",
    "No.",
    "",
])
PLAIN_ENTRY = {
    "start": [1.0, 5.0, 3608.25, 3610.0],
    "end": [4.5, 8.25, 3610.0, 3611.0],
    "text": ["Welcome to the kitchen.", "Today: sourdough & a little patience.", "No.", "No."],
}

JSON3 = {
    "wireMagic": "pb3",
    "pens": [{}],
    "wsWinStyles": [{}, {"mhModeHint": 2, "juJustifCode": 0, "sdScrollDir": 3}],
    "wpWinPositions": [{}, {"apPoint": 6, "ahHorPos": 20, "avVerPos": 100, "rcRows": 2, "ccCols": 40}],
    "events": [
        {"tStartMs": 0, "dDurationMs": 11000, "id": 1, "wpWinPosId": 1, "wsWinStyleId": 1},
        {"tStartMs": 30, "dDurationMs": 4600, "wWinId": 1, "segs": [
            {"utf8": "hi", "acAsrConf": 0}, {"utf8": " everyone", "tOffsetMs": 329, "acAsrConf": 0},
            {"utf8": " welcome", "tOffsetMs": 750, "acAsrConf": 0}, {"utf8": " back", "tOffsetMs": 990, "acAsrConf": 0}]},
        {"tStartMs": 2070, "dDurationMs": 2560, "wWinId": 1, "aAppend": 1, "segs": [{"utf8": "\n"}]},
        {"tStartMs": 2080, "dDurationMs": 4870, "wWinId": 1, "segs": [
            {"utf8": "today", "acAsrConf": 0}, {"utf8": " we're", "tOffsetMs": 559}, {"utf8": " making", "tOffsetMs": 799},
            {"utf8": "  bread", "tOffsetMs": 1040}]},
        {"tStartMs": 4630, "dDurationMs": 2320, "wWinId": 1, "aAppend": 1, "segs": [{"utf8": "\n"}]},
        {"tStartMs": 4640, "dDurationMs": 4500, "wWinId": 1, "segs": [{"utf8": "so you need"}]},
        {"tStartMs": 6000, "dDurationMs": 3000, "wWinId": 1, "aAppend": 1, "segs": [{"utf8": "flour &amp; water"}]},
        {"tStartMs": 8000, "dDurationMs": 100, "segs": [{"utf8": "\n\n"}]},
        {"tStartMs": 9160, "wWinId": 1, "segs": [{"utf8": "okay"}]},
    ],
}
JSON3_ENTRY = {  # each end clipped to the next line's start; the last line has no duration
    "start": [0.03, 2.08, 4.64, 9.16],
    "end": [2.08, 4.64, 9.14, 9.16],
    "text": ["hi everyone welcome back", "today we're making bread", "so you need flour &amp; water", "okay"],
}


def test_youtube_auto_captions_give_one_segment_per_spoken_line() -> None:
    segments = parse_vtt(AUTO_VTT, "auto.vtt")
    assert to_caption_entry(segments) == AUTO_ENTRY
    assert all(end >= start for start, end, _ in segments)


def test_plain_subtitles_give_one_segment_per_cue() -> None:
    assert to_caption_entry(parse_vtt(PLAIN_VTT, "plain.vtt")) == PLAIN_ENTRY  # the repeated "No." is two cues, kept


def test_json3_appends_skips_newlines_and_clips_ends() -> None:
    segments = parse_json3(json.dumps(JSON3), "x.json3")
    assert to_caption_entry(segments) == JSON3_ENTRY
    assert parse_json3(json.dumps(JSON3).encode(), "x.json3") == segments
    # out of order: an end is clipped to the next start but never before its own start
    swapped = {"events": [{"tStartMs": 5000, "dDurationMs": 1000, "segs": [{"utf8": "b"}]}, {"tStartMs": 1000, "dDurationMs": 1000, "segs": [{"utf8": "a"}]}]}
    assert parse_json3(json.dumps(swapped), "s.json3") == [(5.0, 5.0, "b"), (1.0, 2.0, "a")]


def test_read_captions_dispatches_on_the_suffix(tmp_path: Path) -> None:
    (tmp_path / "a.en.vtt").write_text(AUTO_VTT, encoding="utf-8")
    (tmp_path / "a.en.json3").write_text(json.dumps(JSON3), encoding="utf-8")
    (tmp_path / "p.vtt").write_bytes(b"\xef\xbb\xbf" + PLAIN_VTT.encode())  # with a byte order mark
    assert to_caption_entry(read_captions(tmp_path / "a.en.vtt")) == AUTO_ENTRY
    assert to_caption_entry(read_captions(tmp_path / "a.en.json3")) == JSON3_ENTRY
    assert to_caption_entry(read_captions(tmp_path / "p.vtt")) == PLAIN_ENTRY


@pytest.mark.parametrize("name,content,message", [
    ("a.vtt", "1\n00:00:01.000 --> 00:00:02.000\nhi\n", r"line 1: '1' is not a WebVTT header, expected 'WEBVTT'"),
    ("b.vtt", "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nhi\n\n00:00:1.000 --> 00:00:02.000\nthere\n",
     r"line 6: bad cue start '00:00:1.000', expected HH:MM:SS.mmm or MM:SS.mmm"),
    ("c.vtt", "WEBVTT\n\n00:00:01.000 --> 00:01:61.000\nhi\n", r"line 3: bad cue end '00:01:61.000'"),
    ("d.vtt", "WEBVTT\n\ncue-1\nhello there\n", r"line 4: 'hello there' after cue identifier 'cue-1', expected a cue timing 'start --> end'"),
    ("e.vtt", "WEBVTT\n\n00:00:05.000 --> 00:00:04.000\nhi\n", r"line 3: cue ends at 00:00:04.000, before its start 00:00:05.000"),
    ("f.vtt", "WEBVTT\n\n00:00:01.000 -->\nhi\n", r"line 3: bad cue timing '00:00:01.000 -->', expected 'start --> end'"),
    ("g.json3", '{"events": [{"tStartMs": 0, "segs": [{"utf8": "a"}]}, ', r"not valid JSON \(Expecting .*line 1 column"),
    ("h.json3", '{"events": [{"tStartMs": 0, "segs": [{"utf8": "a"}]}, {"id": 2}, {"dDurationMs": 5, "segs": [{"utf8": "b"}]}]}',
     r"events\[2\]: missing 'tStartMs', expected the event's start in milliseconds"),
    ("i.json3", '{"events": [{"tStartMs": 0, "segs": [{"text": "a"}]}]}', r"events\[0\]\.segs\[0\]: missing 'utf8'"),
    ("j.json3", '{"events": [{"tStartMs": "0", "segs": [{"utf8": "a"}]}]}', r"events\[0\]\.tStartMs: '0', expected a non-negative number"),
    ("j2.json3", '{"events": [{"tStartMs": 0, "dDurationMs": NaN, "segs": [{"utf8": "a"}]}]}', r"events\[0\]\.dDurationMs: 'nan', expected"),
    ("k.json3", '{"captions": []}', r"no 'events' list, expected YouTube json3"),
    ("l.srt", "1\n00:00:01,000 --> 00:00:02,000\nhi\n", r"unknown caption format '.srt', expected .vtt or .json3"),
])
def test_malformed_captions_are_one_line_errors_naming_file_and_place(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: {message}") as info:
        read_captions(path)
    assert "\n" not in str(info.value)


def test_unreadable_caption_files_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path / 'none.vtt'))}: cannot read captions"):
        read_captions(tmp_path / "none.vtt")
    (tmp_path / "latin.vtt").write_bytes(b"WEBVTT\n\n00:00.000 --> 00:01.000\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"latin.vtt: byte 35 is not UTF-8"):
        read_captions(tmp_path / "latin.vtt")


def test_subtitle_options_and_file_lookup(tmp_path: Path) -> None:
    assert subtitle_options(["en", "en-US"]) == {
        "writesubtitles": True, "writeautomaticsub": True, "subtitleslangs": ["en", r"en\-US"], "subtitlesformat": "json3/vtt"}
    for bad in ([], "en", ["../x"], ["en.*"]):
        with pytest.raises(ConfigError, match="expected"):
            subtitle_options(bad)
    assert find_captions(tmp_path, "v", ["en"]) is None
    for name in ("v.de.json3", "v.en.vtt", "v.en.vtt.part", "w.en.json3"):
        (tmp_path / name).write_text("")
    assert find_captions(tmp_path, "v", ["en", "de"]) == tmp_path / "v.en.vtt"  # language order first
    (tmp_path / "v.en.json3").write_text("")
    assert find_captions(tmp_path, "v", ["en", "de"]) == tmp_path / "v.en.json3"  # then json3 before vtt
    assert find_captions(tmp_path, "v", ["fr", "de"]) == tmp_path / "v.de.json3"


# --------------------------------------------------------------------------------------------
# real yt-dlp, generic extractor, on 127.0.0.1


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "srv")
    for folder in ("watch", "media", "subs"):
        (srv.root / folder).mkdir(parents=True)
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _page(site: Server, vid: str, tracks: list[tuple[str, str]], tmp_path: Path) -> str:
    """A watch page playing ``/media/<vid>.mp4`` with ``<track>`` captions ``(file under /subs, srclang)``."""
    (site.root / "media" / f"{vid}.mp4").write_bytes(_tiny_mp4(tmp_path))
    track_tags = "".join(f'<track kind="captions" src="/subs/{name}" srclang="{lang}" label="{lang}">' for name, lang in tracks)
    html = f'<!DOCTYPE html>\n<html><head><title>{vid}</title></head><body><video src="/media/{vid}.mp4">{track_tags}</video></body></html>\n'
    (site.root / "watch" / f"{vid}.html").write_text(html)
    return f"{site.url}/watch/{vid}.html"


def _fetch(url: str, workdir: Path, stem: str, langs: list[str] | None) -> Path:
    options = {**ytdlp_opts(2), **(subtitle_options(langs) if langs else {})}
    return clips.fetch_video(url, workdir, stem, options, fetch.Deadline(30), None)


def test_ytdlp_writes_the_vtt_captions_of_an_html5_video(tmp_path: Path, site: Server) -> None:
    (site.root / "subs" / "abc.en.vtt").write_text(AUTO_VTT)
    url = _page(site, "abc", [("abc.en.vtt", "en")], tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    video = _fetch(url, work, "abc", ["en"])
    assert video == work / "abc.mp4" and video.read_bytes() == (site.root / "media" / "abc.mp4").read_bytes()
    assert sorted(p.name for p in work.iterdir()) == ["abc.en.vtt", "abc.mp4"]
    found = find_captions(work, "abc", ["en"])
    assert found == work / "abc.en.vtt" and to_caption_entry(read_captions(found)) == AUTO_ENTRY


def test_ytdlp_takes_json3_first_and_only_the_asked_languages(tmp_path: Path, site: Server) -> None:
    (site.root / "subs" / "abc.en.vtt").write_text(AUTO_VTT)
    (site.root / "subs" / "abc.en.json3").write_text(json.dumps(JSON3))
    (site.root / "subs" / "abc.de.vtt").write_text(PLAIN_VTT)
    url = _page(site, "abc", [("abc.en.vtt", "en"), ("abc.en.json3", "en"), ("abc.de.vtt", "de")], tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    _fetch(url, work, "abc", ["en"])
    assert sorted(p.name for p in work.iterdir()) == ["abc.en.json3", "abc.mp4"]
    assert site.gets("/subs/abc.en.vtt") == [] and site.gets("/subs/abc.de.vtt") == []
    assert to_caption_entry(read_captions(find_captions(work, "abc", ["en"]))) == JSON3_ENTRY


def test_no_captions_is_a_video_alone_and_a_failed_caption_fails_the_call(tmp_path: Path, site: Server) -> None:
    work = tmp_path / "work"
    work.mkdir()
    bare = _page(site, "bare", [], tmp_path)
    assert _fetch(bare, work, "bare", ["en"]) == work / "bare.mp4" and find_captions(work, "bare", ["en"]) is None
    # a caption 404 fails yt-dlp before the video is fetched; without the subtitle options it comes
    gone = _page(site, "gone", [("gone.en.vtt", "en")], tmp_path)
    with pytest.raises(fetch.FetchError) as info:
        _fetch(gone, work, "gone", ["en"])
    assert subtitle_failed(info.value.reason) and "HTTP Error 404" in info.value.reason
    assert site.gets("/media/gone.mp4") == [] and not list(work.glob("gone*"))
    assert not subtitle_failed("Unable to download webpage: HTTP Error 404: Not Found")
    assert _fetch(gone, work, "gone", None) == work / "gone.mp4" and find_captions(work, "gone", ["en"]) is None
