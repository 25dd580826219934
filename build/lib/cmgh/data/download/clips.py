"""Clips from video sites: yt-dlp fetches the video, PyAV cuts and re-encodes it.

No ffmpeg binary is needed. yt-dlp downloads one file that already holds video and audio (no
merging) and PyAV, whose wheels bundle the FFmpeg libraries, cuts the clip to its window by
decoding and re-encoding it: exact to a frame, where a stream copy could only start at a
keyframe. Output clips are H.264 + AAC mp4, like the generator's (:mod:`cmgh.data.io.media`).
yt-dlp runs in worker processes (:mod:`cmgh.data.download.child`), so that the item's time limit
and the request timeout hold even against a server that trickles bytes; the cut runs here, its
deadline checked at every frame.
"""

from __future__ import annotations

import glob
import logging
import math
import re
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from cmgh.data.io import encode, media
from cmgh.data.download import child
from cmgh.data.download.fetch import (
    CORRUPT,
    ERROR,
    NETWORK,
    PRIVATE,
    RATE_LIMITED,
    SERVER,
    TIMEOUT,
    UNAVAILABLE,
    Deadline,
    FetchError,
    RateLimiter,
)
from cmgh.errors import DataError

log = logging.getLogger(__name__)
_EPS = 1e-6
AUDIO_MARGIN = 0.1  # seconds decoded before the window so the resampler is warm
# -P: the script's folder (this package's modules) must not shadow anything yt-dlp imports
YTDLP_WORKER = (sys.executable, "-P", str(Path(__file__).with_name("ytdlp_worker.py")))

# yt-dlp reports failures as text; the first matching rule decides the manifest status.
_YTDLP_STATUSES = (
    (re.compile(r"not a bot|HTTP Error 429|too many requests|rate.?limit", re.I), RATE_LIMITED),
    (re.compile(r"\bprivate\b|members.only|confirm your age|age.restricted|HTTP Error 40[13]|sign in", re.I), PRIVATE),
    (re.compile(r"timed? ?out", re.I), TIMEOUT),
    (re.compile(r"HTTP Error 5\d\d", re.I), SERVER),
    (re.compile(r"unavailable|not available|removed|terminated|does not exist|HTTP Error 4(04|10)|copyright|unsupported url|no video formats", re.I), UNAVAILABLE),
    (re.compile(r"connection|reset by peer|unable to download|urlopen|name resolution|ssl|incomplete", re.I), NETWORK),
)


def ytdlp_status(message: str) -> str:
    for pattern, status in _YTDLP_STATUSES:
        if pattern.search(message):
            return status
    return ERROR


def ytdlp_options(dl: Any, timeout: float) -> dict[str, Any]:
    """yt-dlp settings shared by every item: our own loop does the retrying and the pacing.

    ``socket_timeout`` is also the request timeout the yt-dlp process is held to (:mod:`child`).
    """
    opts: dict[str, Any] = {
        "format": str(dl.ytdlp_format),
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "noplaylist": True,
        "socket_timeout": timeout,
        "retries": 0,
        "fragment_retries": 0,
        "extractor_retries": 0,
        "continuedl": True,  # resume a .part file left by a killed run
        "cachedir": False,
    }
    if dl.cookies:
        opts["cookiefile"] = str(dl.cookies)
    return opts


def _written(workdir: Path, stem: str) -> int:
    """Bytes yt-dlp has written for ``stem`` so far (its .part file, captions): its progress."""
    total = 0
    for path in workdir.glob(f"{glob.escape(stem)}.*"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:  # renamed between the listing and the stat
            pass
    return total


def fetch_video(url: str, workdir: Path, stem: str, options: dict[str, Any], deadline: Deadline, limiter: RateLimiter | None) -> Path:
    """Download the video behind ``url`` into ``workdir/stem.<ext>``; FetchError on failure.

    yt-dlp runs in this thread's worker process (:mod:`cmgh.data.download.child`), killed at the
    item's time limit, on Ctrl-C, or when it writes less than the request rule asks for.
    """
    if limiter is not None:
        limiter.wait(deadline.stop)
    deadline.check()
    opts = {**options, "outtmpl": {"default": str(workdir / f"{stem}.%(ext)s")}}
    answer = child.request(
        YTDLP_WORKER, {"url": url, "options": opts}, deadline=deadline, timeout=float(options["socket_timeout"]),
        written=lambda: _written(workdir, stem), what=url,
    )
    if "crash" in answer:
        raise FetchError(ERROR, f"yt-dlp failed on {url}: {answer['crash']}")
    if "error" in answer:
        message = str(answer["error"]).removeprefix("ERROR: ")
        if "HTTP Error 416" in message:
            # A part file holding the whole video (killed just before yt-dlp's rename): yt-dlp
            # retries its range request unchanged and gives up, so start that file over.
            for part in workdir.glob(f"{glob.escape(stem)}.*part"):
                part.unlink()
            raise FetchError(NETWORK, f"{message}; restarting the download", retry=True)
        raise FetchError(ytdlp_status(message), message)
    if answer.get("path") is None:
        raise FetchError(UNAVAILABLE, f"yt-dlp found no video at {url}")
    path = Path(answer["path"])
    if not path.is_file():
        raise FetchError(ERROR, f"yt-dlp reported success but wrote no file for {url}")
    return path


# --------------------------------------------------------------------------------------------
# cutting


def output_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """Frame size after scaling the short side to ``short_side`` (kept if None); always even."""
    if short_side:
        scale = short_side / min(width, height)
        width, height = width * scale, height * scale
    return max(2, int(round(width / 2)) * 2), max(2, int(round(height / 2)) * 2)


def is_plain_mp4(path: Path) -> bool:
    """An mp4 the readers take as it is: H.264/MPEG-4 video and AAC audio (or none)."""
    try:
        info = media.probe(path)
        with av.open(str(path)) as container:
            fmt = container.format.name
    except (DataError, av.error.FFmpegError):
        return False
    return "mp4" in fmt and info["video_codec"] in ("h264", "mpeg4") and info["audio_codec"] in ("aac", None)


def cut(
    source: Path,
    target: Path,
    start: float = 0.0,
    end: float | None = None,
    fps: float | None = None,
    short_side: int | None = None,
    deadline: Deadline | None = None,
) -> int:
    """Re-encode ``[start, end)`` of ``source`` (to its end if ``end`` is None) into ``target``.

    Output frame ``i`` shows what the source shows at ``start + i / fps`` (the source's own rate
    when ``fps`` is None), so the clip lasts the window to within one frame. Audio keeps its rate
    and up to two channels, with silence where the source has none. Returns the frame count.
    """
    deadline = deadline or Deadline(None)
    try:
        with av.open(str(source)) as src:
            if not src.streams.video:
                raise FetchError(CORRUPT, f"{source.name}: no video stream")
            vin = src.streams.video[0]
            vin.thread_type = "AUTO"
            rate = Fraction(fps).limit_denominator(1001) if fps else Fraction(vin.average_rate or vin.guessed_rate or 25)
            width, height = output_size(vin.codec_context.width, vin.codec_context.height, short_side)
            ain = src.streams.audio[0] if src.streams.audio else None
            with av.open(str(target), mode="w", format="mp4", options={"fflags": "+bitexact"}) as out:
                vout = encode.add_video_stream(out, rate, width, height)
                aout, layout = None, "mono"
                if ain is not None:
                    layout = "stereo" if ain.codec_context.channels >= 2 else "mono"
                    aout = encode.add_audio_stream(out, int(ain.codec_context.sample_rate), layout)
                frames = _cut_video(src, vin, out, vout, start, end, rate, (width, height), deadline)
                if frames == 0:
                    raise FetchError(CORRUPT, f"{source.name}: no video frames in [{start:g}, {end if end is not None else 'end'}] s")
                if ain is not None and aout is not None:
                    stop = end if end is not None else start + frames / rate
                    _cut_audio(src, ain, out, aout, start, float(stop), layout, deadline)
    except (av.error.FFmpegError, ValueError, RuntimeError) as exc:
        raise FetchError(CORRUPT, f"{source.name}: cannot cut ({' '.join(str(exc).split())[:200]})") from None
    return frames


def _cut_video(src: Any, vin: Any, out: Any, vout: Any, start: float, end: float | None, rate: Fraction, size: tuple[int, int], deadline: Deadline) -> int:
    count = math.ceil((end - start) * rate - _EPS) if end is not None else None
    frame_seconds = 1.0 / float(vin.average_rate or rate)
    emitted = 0

    def target_time(i: int) -> float:
        return start + float(i / rate)

    def emit(frame: Any) -> None:
        nonlocal emitted
        image = frame.reformat(width=size[0], height=size[1], format="yuv420p")
        image.pts, image.time_base = emitted, 1 / rate
        out.mux(vout.encode(image))
        emitted += 1

    def wanted(t: float) -> bool:  # targets still to fill that come before time t
        return (count is None or emitted < count) and target_time(emitted) < t - _EPS

    media.seek(src, vin, start)
    previous, last_time = None, None
    for frame in src.decode(vin):
        t = float(frame.time) if frame.time is not None else (last_time or 0.0) + frame_seconds
        while wanted(t):
            emit(previous if previous is not None else frame)
        previous, last_time = frame, t
        deadline.check()
        if count is not None and emitted >= count:
            break
    if previous is not None and last_time is not None:
        while wanted(last_time + frame_seconds):  # the last frame stays on screen for one frame time
            emit(previous)
    out.mux(vout.encode(None))
    return emitted


def _cut_audio(src: Any, ain: Any, out: Any, aout: Any, start: float, end: float, layout: str, deadline: Deadline) -> None:
    rate = int(ain.codec_context.sample_rate)
    channels = 2 if layout == "stereo" else 1
    first, last = round(start * rate), round(end * rate)  # absolute sample indices of the window
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    pending: list[np.ndarray] = []
    held, pts, position = 0, 0, None  # samples pending, next output pts, absolute index of the next resampled sample

    def take(chunk: np.ndarray) -> None:
        nonlocal position, held, pts
        assert position is not None
        lo, hi = max(first - position, 0), min(last - position, chunk.shape[1])
        position += chunk.shape[1]
        if hi > lo:
            pending.append(chunk[:, lo:hi])
            held += hi - lo
        if held >= media.AUDIO_FRAME:  # encode whole AAC frames, keep the remainder
            wave = np.concatenate(pending, axis=1)
            whole = wave.shape[1] // media.AUDIO_FRAME * media.AUDIO_FRAME
            pts = encode.mux_audio(out, aout, wave[:, :whole], rate, layout, pts)
            pending[:] = [wave[:, whole:]]
            held = wave.shape[1] - whole

    # Always seek: the video pass left the demuxer at (or near) the end of the file.
    src.seek(max(0, int((start - AUDIO_MARGIN) / ain.time_base)), stream=ain, backward=True, any_frame=False)
    for frame in src.decode(ain):
        if position is None:
            position = round(float(frame.time or 0.0) * rate)
            if position > first:  # the source's audio starts late: pad with silence
                pending.append(np.zeros((channels, position - first), np.float32))
                held = position - first
        for res in resampler.resample(frame):
            take(res.to_ndarray().reshape(channels, -1))
        deadline.check()
        if position >= last:
            break
    if position is not None:
        for res in resampler.resample(None):
            take(res.to_ndarray().reshape(channels, -1))
    if pending and held:
        encode.mux_audio(out, aout, np.concatenate(pending, axis=1), rate, layout, pts)
    out.mux(aout.encode(None))


def check_clip(path: Path) -> dict[str, Any]:
    """Probe and decode the first frame: a clip that fails here never gets its final name."""
    try:
        info = media.probe(path)
        media.decode_video(path, 0.0, 1, 1.0)
    except DataError as exc:
        raise FetchError(CORRUPT, str(exc).split(": ", 1)[-1]) from None
    if info["num_frames"] < 1 or info["duration"] <= 0:
        raise FetchError(CORRUPT, f"{path.name}: empty video")
    return info
