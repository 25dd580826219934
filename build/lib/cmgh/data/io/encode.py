"""PyAV writing of the mp4 clips of every dataset (H.264/MPEG-4 video + AAC audio), and the
re-encoding of sources into packed pre-training clips.

Writing is deterministic: same arrays in, same bytes out. We get there by single-threaded
encoders (``threads=1``: x264's frame threads otherwise make rate control depend on timing),
ffmpeg's ``bitexact`` flags on the muxer and both codecs (no encoder version strings) and no
creation time in the container. ``tests/data/test_media.py`` checks two writes byte for byte.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import av
import numpy as np

from cmgh.data.io.media import AUDIO_FRAME, TIME_EPS, open_media, scaled_size, video_stream
from cmgh.errors import DataError
from cmgh.io import atomic_path

VIDEO_CODECS = {"h264": "libx264", "mpeg4": "mpeg4"}


# --------------------------------------------------------------------------------------------
# writing


def write_mp4(
    path: str | os.PathLike[str],
    frames: np.ndarray | Iterable[np.ndarray],
    fps: int,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    video_codec: str = "h264",
) -> Path:
    """Encode ``frames`` (uint8 [T,H,W,3], or an iterable of [H,W,3] frames so that long clips
    never sit in memory whole) and optional mono ``audio`` (float32 [S] in [-1, 1]).

    The file appears atomically (temp file in the same folder, then rename), so a crash never
    leaves a truncated clip that a later run would mistake for a finished one.
    """
    if isinstance(frames, np.ndarray):
        first, stream = (frames[0] if frames.ndim == 4 and len(frames) else None), iter(frames)
        shape, dtype = frames.shape, frames.dtype
    else:
        stream = iter(frames)
        first = next(stream, None)
        if first is not None:
            first = np.asarray(first)
            stream = itertools.chain([first], stream)
        shape, dtype = ((0,) if first is None else (-1, *first.shape)), (None if first is None else first.dtype)
    if first is None or dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T,H,W,3] with T >= 1, got {dtype} {shape}")
    height, width = shape[1:3]
    if video_codec not in VIDEO_CODECS:
        raise ValueError(f"video_codec {video_codec!r} is not one of {', '.join(VIDEO_CODECS)}")
    if (height % 2 or width % 2) and video_codec == "h264":
        raise ValueError(f"H.264 with yuv420p needs even frame sizes, got {width}x{height}")
    target = Path(path)
    with atomic_path(target) as tmp:
        _encode(tmp, stream, (width, height), int(fps), audio, int(sample_rate), video_codec)
    return target


def add_video_stream(
    container: Any,
    fps: int | Fraction,
    width: int,
    height: int,
    codec: str = "h264",
    crf: int = 20,
    gop: int | None = None,
    tune: str | None = None,
) -> Any:
    """A yuv420p video stream with deterministic single-threaded encoder settings.

    ``gop`` fixes the keyframe interval in frames (no scene-cut keyframes), so a reader seeking to
    a random time decodes at most ``gop - 1`` frames in vain; None keeps the encoder's default.
    ``tune`` is x264's (``fastdecode``: no CABAC, deblocking or weighted prediction).
    """
    vstream = container.add_stream(VIDEO_CODECS[codec], rate=fps)
    vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
    vstream.codec_context.time_base = 1 / Fraction(fps)
    if codec == "h264":
        # mbtree=0: x264's macroblock-tree rate control gave run-to-run differences on tiny frames
        # (bytes depended on heap state, seen at 64x64); without it two writes are identical.
        params = "mbtree=0" + (f":keyint={gop}:min-keyint={gop}:scenecut=0" if gop else "")
        vstream.codec_context.options = {
            "threads": "1", "preset": "veryfast", "crf": str(crf), "flags": "+bitexact", "x264-params": params,
        }
        if tune:
            vstream.codec_context.options = {**vstream.codec_context.options, "tune": tune}
    else:
        # Constant quantiser 4 (ffmpeg's -q:v 4 = flag qscale + global_quality 4 * FF_QP2LAMBDA).
        vstream.codec_context.options = {"threads": "1", "flags": "+bitexact+qscale", "global_quality": str(4 * 118)}
        if gop:
            vstream.codec_context.gop_size = gop
    vstream.codec_context.thread_count = 1
    return vstream


def add_audio_stream(container: Any, sample_rate: int, layout: str = "mono", kbps: int | None = None) -> Any:
    """An AAC stream (FFmpeg's native encoder, deterministic); ``kbps`` sets its bitrate (None: the encoder's default)."""
    astream = container.add_stream("aac", rate=sample_rate)
    astream.layout = layout
    if kbps:
        astream.codec_context.bit_rate = int(kbps) * 1000
    astream.codec_context.options = {"flags": "+bitexact", "aac_coder": "fast"}
    return astream


def mux_audio(container: Any, stream: Any, wave: np.ndarray, sample_rate: int, layout: str, pts: int = 0) -> int:
    """Encode planar float audio ``[channels, samples]`` in AAC-sized frames from ``pts``; return the next pts."""
    for start in range(0, wave.shape[1], AUDIO_FRAME):
        chunk = np.ascontiguousarray(wave[:, start : start + AUDIO_FRAME], dtype=np.float32)
        aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        aframe.sample_rate = sample_rate
        aframe.pts = pts + start
        aframe.time_base = Fraction(1, sample_rate)
        container.mux(stream.encode(aframe))
    return pts + wave.shape[1]


def _encode(
    tmp: Path, frames: Iterator[np.ndarray], size: tuple[int, int], fps: int, audio: np.ndarray | None, sample_rate: int, codec: str
) -> None:
    # The temp name ends in .tmp, so name the muxer explicitly.
    with av.open(str(tmp), mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        vstream = add_video_stream(container, fps, *size, codec=codec)
        astream = add_audio_stream(container, sample_rate) if audio is not None else None
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(vstream.encode(frame))
        container.mux(vstream.encode(None))
        if astream is not None:
            wave = np.clip(np.asarray(audio, dtype=np.float32).reshape(1, -1), -1.0, 1.0)
            mux_audio(container, astream, wave, sample_rate, "mono")
            container.mux(astream.encode(None))



# --------------------------------------------------------------------------------------------
# re-encoding (packed pre-training clips)


def transcode(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str] | BinaryIO,
    fps: float,
    short_side: int,
    sample_rate: int,
    *,
    max_seconds: float | None = None,
    crf: int = 20,
    gop: int | None = None,
    audio_kbps: int | None = None,
    tune: str | None = None,
) -> dict[str, Any]:
    """Re-encode the start of ``source`` into an mp4 at path ``out`` or written to ``out`` (a binary file or ``io.BytesIO``).

    The output covers source time ``[0, min(duration, max_seconds))``: frame ``k`` shows what the
    source shows at ``k / fps`` (the frame on screen then), scaled by the decoder's scaler to
    ``short_side`` (area filter, even sizes); H.264 at ``crf`` with a keyframe every ``gop``
    frames, deterministic as :func:`add_video_stream`. Audio becomes AAC mono at ``sample_rate``
    lasting as long as the video (silence where the source has none); a source without an audio
    stream gives none. One pass over the source's packets, so the output is interleaved too.
    The index (``moov``) comes first (``+faststart``): a reader of a byte range reads the header
    and then only its window. FFmpeg writes that by re-reading its output by name, so a file
    object gets the bytes of a temporary file. Returns ``duration`` (seconds of the output),
    ``frames``, ``width``, ``height``, ``has_audio``.
    """
    if isinstance(out, (str, os.PathLike)):
        return _transcode(Path(source), str(out), fps, short_side, sample_rate, max_seconds, crf, gop, audio_kbps, tune)
    with tempfile.TemporaryDirectory(prefix="cmgh-transcode-") as tmp:
        target = Path(tmp) / "clip.mp4"
        info = _transcode(Path(source), str(target), fps, short_side, sample_rate, max_seconds, crf, gop, audio_kbps, tune)
        with open(target, "rb") as fh:
            shutil.copyfileobj(fh, out)
    return info


def _transcode(
    path: Path, out: str, fps: float, short_side: int, sample_rate: int,
    max_seconds: float | None, crf: int, gop: int | None, audio_kbps: int | None, tune: str | None,
) -> dict[str, Any]:
    rate = Fraction(fps).limit_denominator(1001)
    with open_media(path) as src:
        vin = video_stream(src, path)
        ain = src.streams.audio[0] if src.streams.audio else None
        length = _container_seconds(src, vin)
        if max_seconds is not None:
            length = min(length, float(max_seconds))
        count = max(1, math.ceil(length * rate - TIME_EPS))
        width, height = scaled_size(vin.codec_context.width, vin.codec_context.height, int(short_side))
        with av.open(out, mode="w", format="mp4", options={"fflags": "+bitexact", "movflags": "+faststart"}) as dst:
            vout = add_video_stream(dst, rate, width, height, crf=crf, gop=gop, tune=tune)
            video = _VideoSampler(dst, vout, rate, count, (width, height), 1.0 / float(vin.average_rate or rate))
            audio = None
            if ain is not None:
                aout = add_audio_stream(dst, int(sample_rate), "mono", audio_kbps)
                audio = _AudioWindow(dst, aout, int(sample_rate), round(count / rate * int(sample_rate)))
            for packet in src.demux(*([vin] if ain is None else [vin, ain])):
                sink: Any = video if packet.stream is vin else audio
                if sink.done:
                    if video.done and (audio is None or audio.done):
                        break
                    continue
                for frame in packet.decode():
                    sink.push(frame)
            if not video.emitted and video.previous is None:
                raise DataError(f"{path}: corrupt: no decodable video frames")
            video.finish()
            if audio is not None:
                audio.finish()
    return {"duration": count / float(rate), "frames": count, "width": width, "height": height, "has_audio": ain is not None}


def _container_seconds(container: Any, vstream: Any) -> float:
    if container.duration is not None:
        return container.duration / av.time_base
    if vstream.duration is not None and vstream.time_base is not None:
        return float(vstream.duration * vstream.time_base)
    raise DataError(f"{container.name}: corrupt: no duration in the container")


class _VideoSampler:
    """Encodes the frame on screen at each output time ``k / rate``, ``k < count``."""

    def __init__(self, container: Any, stream: Any, rate: Fraction, count: int, size: tuple[int, int], frame_seconds: float) -> None:
        self.container, self.stream, self.rate, self.count, self.size = container, stream, rate, count, size
        self.frame_seconds = frame_seconds
        self.emitted, self.previous, self.last_time = 0, None, None

    @property
    def done(self) -> bool:
        return self.emitted >= self.count

    def _emit(self, frame: Any) -> None:
        image = frame.reformat(width=self.size[0], height=self.size[1], format="yuv420p", interpolation="AREA")
        image.pts, image.time_base = self.emitted, 1 / self.rate
        self.container.mux(self.stream.encode(image))
        self.emitted += 1

    def _fill_before(self, t: float, frame: Any) -> None:
        while not self.done and float(self.emitted / self.rate) < t - TIME_EPS:
            self._emit(frame)

    def push(self, frame: Any) -> None:
        t = float(frame.time) if frame.time is not None else (self.last_time or 0.0) + self.frame_seconds
        self._fill_before(t, self.previous if self.previous is not None else frame)
        self.previous, self.last_time = frame, t

    def finish(self) -> None:
        while not self.done:  # past the source's last frame it stays on screen
            self._emit(self.previous)
        self.container.mux(self.stream.encode(None))


class _AudioWindow:
    """Resamples to mono and encodes output samples ``[0, length)`` in whole AAC frames."""

    def __init__(self, container: Any, stream: Any, sample_rate: int, length: int) -> None:
        self.container, self.stream, self.rate, self.length = container, stream, sample_rate, length
        self.resampler = av.AudioResampler(format="fltp", layout="mono", rate=sample_rate)
        self.position: int | None = None  # output index of the next resampled sample
        self.pending: list[np.ndarray] = []
        self.held = self.pts = 0

    @property
    def done(self) -> bool:
        return self.position is not None and self.position >= self.length

    def push(self, frame: Any) -> None:
        if self.position is None:
            self.position = round(float(frame.time or 0.0) * self.rate)
            if self.position > 0:  # the source's audio starts late: silence first
                self._take(np.zeros((1, self.position), np.float32), 0)
        for res in self.resampler.resample(frame):
            self._resampled(res.to_ndarray().reshape(1, -1))

    def _resampled(self, chunk: np.ndarray) -> None:
        assert self.position is not None
        self._take(chunk, self.position)
        self.position += chunk.shape[1]

    def _take(self, chunk: np.ndarray, at: int) -> None:
        lo, hi = max(-at, 0), min(self.length - at, chunk.shape[1])
        if hi > lo:
            self.pending.append(chunk[:, lo:hi])
            self.held += hi - lo
        if self.held >= AUDIO_FRAME:
            wave = np.concatenate(self.pending, axis=1)
            whole = wave.shape[1] // AUDIO_FRAME * AUDIO_FRAME
            self.pts = mux_audio(self.container, self.stream, wave[:, :whole], self.rate, "mono", self.pts)
            self.pending, self.held = [wave[:, whole:]], wave.shape[1] - whole

    def finish(self) -> None:
        if self.position is not None and not self.done:
            for res in self.resampler.resample(None):
                self._resampled(res.to_ndarray().reshape(1, -1))
        missing = self.length - self.pts - self.held  # silence to the video's end
        if missing > 0:
            self.pending.append(np.zeros((1, missing), np.float32))
            self.held += missing
        if self.held:
            mux_audio(self.container, self.stream, np.concatenate(self.pending, axis=1), self.rate, "mono", self.pts)
        self.container.mux(self.stream.encode(None))
