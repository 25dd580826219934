"""PyAV reading of the mp4 (and wav) clips of every dataset: probe, seek, decode windows.

Reading never trusts the file: anything FFmpeg cannot open or decode becomes a
:class:`~cmgh.errors.DataError` whose message says ``missing`` or ``corrupt: <reason>``, which the
feature extractor records in its manifest instead of crashing. A source is a path or a packed
shard member (bytes or a read-only file view of its byte range). Writing and re-encoding:
:mod:`cmgh.data.io.encode`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import av
import numpy as np

from cmgh.data.io.frames import Crop, RGBClip
from cmgh.data.io.frames import scaled_size as scaled_size  # re-exported: media is where callers look
from cmgh.errors import DataError

AUDIO_FRAME = 1024  # samples per AAC frame
TIME_EPS = 1e-6  # seconds: frame times within this of a target count as on it


# --------------------------------------------------------------------------------------------
# reading


Source = str | os.PathLike[str] | bytes | memoryview | BinaryIO  # a file, or a tar member's bytes


@contextmanager
def open_media(source: Source, name: str | None = None, container_format: str | None = None) -> Iterator[Any]:
    """Open a file or in-memory bytes (a packed shard's member) for reading; FFmpeg failures become
    DataError naming the file or ``name`` (missing / corrupt)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    if isinstance(source, io.IOBase):
        path: Any = name or "<bytes>"
        target: Any = source
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{path}: missing (no such media file)")
        target = str(path)
    try:
        container = av.open(target, mode="r", format=container_format)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise DataError(f"{path}: corrupt: cannot open ({_reason(exc)})") from None
    try:
        yield container
    except (av.error.FFmpegError, ValueError, RuntimeError) as exc:
        raise DataError(f"{path}: corrupt: cannot decode ({_reason(exc)})") from None
    finally:
        container.close()


def manifest_status(source: str | os.PathLike[str], exc: DataError) -> str:
    """What a feature manifest records for a source that failed with ``exc``: ``missing`` when the
    file is not there, else ``corrupt: <reason>`` (the reason this module's errors carry)."""
    if not Path(source).exists():
        return "missing"
    return f"corrupt: {str(exc).split('corrupt: ', 1)[-1]}"


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return text[:200]


def video_stream(container: Any, path: Path) -> Any:
    if not container.streams.video:
        raise DataError(f"{path}: corrupt: no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "SLICE"  # frame threads would add latency without helping tiny clips
    return stream


def seek(container: Any, stream: Any, seconds: float) -> None:
    """Seek to the keyframe at or before ``seconds`` (nothing to do at the start)."""
    if seconds <= 0 or stream.time_base is None:
        return
    container.seek(int(seconds / stream.time_base), stream=stream, backward=True, any_frame=False)


def duration(path: str | os.PathLike[str]) -> float:
    """Seconds of media in the file, from the container (works for audio-only files too)."""
    path = Path(path)
    with open_media(path) as container:
        if container.duration is not None:
            return container.duration / av.time_base
        stream = (container.streams.video or container.streams.audio or [None])[0]
        if stream is None or stream.duration is None or stream.time_base is None:
            raise DataError(f"{path}: corrupt: no duration in the container")
        return float(stream.duration * stream.time_base)


def probe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Duration, frame rate, size, audio rate and frame count from the container headers."""
    path = Path(path)
    with open_media(path) as container:
        vstream = video_stream(container, path)
        duration = None
        if vstream.duration is not None and vstream.time_base is not None:
            duration = float(vstream.duration * vstream.time_base)
        if duration is None and container.duration is not None:
            duration = container.duration / av.time_base
        rate = vstream.average_rate or vstream.guessed_rate or vstream.base_rate
        fps = float(rate) if rate else 0.0
        num_frames = int(vstream.frames or 0)
        if not num_frames and duration and fps:
            num_frames = int(round(duration * fps))
        audio = container.streams.audio[0] if container.streams.audio else None
        return {
            "duration": float(duration or 0.0),
            "fps": fps,
            "width": int(vstream.codec_context.width),
            "height": int(vstream.codec_context.height),
            "sample_rate": int(audio.codec_context.sample_rate) if audio is not None else 0,
            "num_frames": num_frames,
            "has_audio": audio is not None,
            "video_codec": vstream.codec_context.name,
            "audio_codec": audio.codec_context.name if audio is not None else None,
        }


def center_crop(images: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` square of uint8 [T,H,W,3] frames (a view)."""
    height, width = images.shape[1:3]
    top, left = (height - size) // 2, (width - size) // 2
    return images[:, top : top + size, left : left + size]


def _label(source: Source, name: str | None) -> Any:
    return name or (source if isinstance(source, (str, os.PathLike)) else "<bytes>")


def decode_video(source: Source, start: float, num_frames: int, fps: float, short_side: int | None = None, name: str | None = None) -> np.ndarray:
    """``num_frames`` RGB frames sampled at ``fps`` from ``start`` seconds: uint8 [T,H,W,3].

    Each sample time takes the frame on screen at that moment (the last one with a timestamp at
    or before it); past the end of the clip the last frame repeats, so short clips still fill T.
    With ``short_side`` FFmpeg's scaler resizes while converting to RGB (area filter: antialiased
    downscaling in one pass over the frame), which is many times cheaper at real resolutions
    than converting the full frame and resizing it afterwards.
    """
    if num_frames < 1 or fps <= 0:
        raise ValueError(f"need num_frames >= 1 and fps > 0, got {num_frames}, {fps}")
    with open_media(source, name) as container:
        return _video_window(container, _label(source, name), start, num_frames, fps, short_side)


def decode_audio(source: Source, start: float, duration: float, sample_rate: int, name: str | None = None) -> np.ndarray:
    """Mono float32 waveform of ``duration`` seconds from ``start``, resampled to ``sample_rate``.

    Exactly ``round(duration * sample_rate)`` samples: zeros where the file has no audio (before
    its start, past its end, or no audio stream at all, which is legitimate for some real clips).
    """
    with open_media(source, name) as container:
        return _audio_window(container, start, duration, sample_rate)


def has_audio_stream(source: Source, name: str | None = None) -> bool:
    """Whether the file has an audio stream at all (:func:`decode_audio` gives silence without one)."""
    with open_media(source, name) as container:
        return bool(container.streams.audio)


def decode_clip(
    source: Source, start: float, num_frames: int, fps: float, sample_rate: int, short_side: int | None = None, name: str | None = None,
    crop: Callable[[int, int], Crop] | None = None, container_format: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decode_video` and the aligned :func:`decode_audio` window (``num_frames / fps`` s) in
    one pass: one open (which parses the sample table), one seek and one walk over the window's
    interleaved packets for both streams, instead of reading the window's bytes twice. The video
    packets are decoded as they come and the audio packets held and decoded after them: switching
    decoders packet by packet cost ~5 % more (each evicts the other's working set from the caches).

    ``crop`` (the packed stream's random resized crop and flip) receives the frames' ``(height,
    width)`` once they are decoded and returns the :class:`Crop` that FFmpeg cuts, scales and mirrors
    while converting to RGB (:func:`cmgh.data.io.frames.to_rgb`): the video is then [T,size,size,3].
    ``container_format`` (e.g. ``"mp4"`` for packed members) skips FFmpeg's format probe."""
    if num_frames < 1 or fps <= 0:
        raise ValueError(f"need num_frames >= 1 and fps > 0, got {num_frames}, {fps}")
    path = _label(source, name)
    with open_media(source, name, container_format) as container:
        vstream = video_stream(container, path)
        vstream.thread_count = 1  # no slice-thread pool per clip: the stream's parallelism is its workers
        astream = container.streams.audio[0] if container.streams.audio else None
        video = _Frames(vstream, float(start), num_frames, float(fps), short_side, crop)
        audio = _Samples(astream, float(start), num_frames / float(fps), int(sample_rate))
        # Seeking the video stream positions the audio at the keyframe found too (FFmpeg's mov
        # demuxer), so going back by the audio margin covers the decoder's warm-up for both.
        seek(container, vstream, float(start) - audio.margin)
        streams = [vstream] if astream is None else [vstream, astream]
        for packet in container.demux(*streams):
            if packet.stream is not vstream:
                audio.hold(packet)
            elif not video.done:
                for frame in packet.decode():
                    video.push(frame)
            if video.done and audio.done:
                break
        audio.decode_held()
        return video.images(path), audio.wave()


def _clock(time_base: Any) -> Callable[[Any], float | None]:
    """Seconds of a packet's or frame's ``pts`` in its stream's ``time_base``, without the Fraction
    PyAV builds on every ``.time`` (a few hundred per window); ``pts * num / den`` in integers
    rounds exactly as ``float(pts * time_base)`` does."""
    if time_base is None:
        return lambda obj: None if obj.time is None else float(obj.time)
    num, den = int(time_base.numerator), int(time_base.denominator)
    return lambda obj: None if obj.pts is None else obj.pts * num / den


class _Frames:
    """The frame on screen at each of the window's sample times (the last one with a timestamp at
    or before it), from decoded frames in order, converted to RGB as soon as it is known to be one
    (:class:`~cmgh.data.io.frames.RGBClip`); past the clip's end the last frame repeats."""

    def __init__(
        self, stream: Any, start: float, num_frames: int, fps: float, short_side: int | None = None, crop: Callable[[int, int], Crop] | None = None,
    ) -> None:
        self.targets = (start + np.arange(num_frames) / fps + TIME_EPS).tolist()
        self.rgb = RGBClip(num_frames, short_side, crop)
        self.previous: Any = None
        self.done = False
        self.seconds = _clock(stream.time_base)

    def _put(self, frame: Any) -> None:
        self.rgb.put(frame)
        self.done = self.rgb.rows == len(self.targets)

    def push(self, frame: Any) -> None:
        t = self.seconds(frame)
        t = 0.0 if t is None else t
        while not self.done and t > self.targets[self.rgb.rows]:
            self._put(self.previous if self.previous is not None else frame)
        if not self.done:
            self.previous = frame

    def images(self, path: Any) -> np.ndarray:
        if self.previous is None and not self.rgb.rows:
            raise DataError(f"{path}: corrupt: no decodable video frames")
        while not self.done:
            self._put(self.previous if self.previous is not None else self.rgb.last)
        return self.rgb.array()


class _Samples:
    """Mono float32 samples ``[start, start + duration)`` at ``sample_rate`` from decoded audio
    frames in order (zeros where there are none: no stream, before its start, past its end)."""

    def __init__(self, stream: Any, start: float, duration: float, sample_rate: int) -> None:
        self.start, self.rate = start, sample_rate
        self.length = int(round(duration * sample_rate))
        self.chunks: list[np.ndarray] = []
        self.t0: float | None = None
        self.done = stream is None
        self.resampler = None
        self.margin = 0.0
        self.held: list[Any] = []
        self.early_pts: float | None = None
        self.seconds = _clock(None if stream is None else stream.time_base)
        if stream is None:
            return
        ctx = stream.codec_context
        # Planar float mono at the target rate (what the packed AAC decodes to) needs no resampler:
        # swresample would only copy it, at a third of the decoding cost. Then the margin only
        # covers AAC's overlapped first frame after a seek; a resampler needs more warm-up.
        direct = ctx.format is not None and ctx.format.name == "fltp" and ctx.layout.nb_channels == 1 and ctx.sample_rate == sample_rate
        if not direct:
            self.resampler = av.AudioResampler(format="flt", layout="mono", rate=int(sample_rate))
        self.margin = 2 * AUDIO_FRAME / float(ctx.sample_rate or sample_rate) if direct else 0.1
        self.stop = start + duration + self.margin
        if stream.time_base is not None:  # the early packets' bound in the stream's time base (no Fraction per packet)
            self.early_pts = (self.start - self.margin) / float(stream.time_base)

    def early(self, packet: Any) -> bool:
        """The packet ends before the window and its warm-up margin: not even decoded (the demuxer
        starts the audio at the video keyframe, up to a GOP before the window)."""
        if self.t0 is not None or self.early_pts is None or packet.pts is None or not packet.duration:
            return False
        return packet.pts + packet.duration < self.early_pts

    def hold(self, packet: Any) -> None:
        """Keep a packet of the window (not the warm-up's early ones) for :meth:`decode_held`; the
        first one past the window's end (and its margin) is the last."""
        if self.done or (not self.held and self.early(packet)):
            return
        self.held.append(packet)
        t = self.seconds(packet)
        if t is not None and t > self.stop:
            self.done = True

    def decode_held(self) -> None:
        for packet in self.held:
            for frame in packet.decode():
                self.push(frame)
        self.held = []

    def push(self, frame: Any) -> None:
        t = self.seconds(frame)
        if self.resampler is None:
            if t is not None and t + frame.samples / self.rate <= self.start - TIME_EPS and self.t0 is None:
                return  # wholly before the window (only the seek's warm-up): not converted
            # the mono plane as it is (to_ndarray stacks the planes: as costly as decoding the frame)
            self.chunks.append(np.frombuffer(frame.planes[0], dtype=np.float32, count=frame.samples))
        else:
            self.chunks.extend(res.to_ndarray().reshape(-1) for res in self.resampler.resample(frame))
        if self.t0 is None:
            self.t0 = t if t is not None else 0.0
        if t is not None and t > self.stop:
            self.done = True

    def wave(self) -> np.ndarray:
        out = np.zeros(self.length, dtype=np.float32)
        if self.resampler is not None and self.t0 is not None:
            self.chunks.extend(res.to_ndarray().reshape(-1) for res in self.resampler.resample(None))
        if self.t0 is None or not self.chunks:
            return out
        wave = np.concatenate(self.chunks).astype(np.float32, copy=False)
        offset = int(round((self.start - self.t0) * self.rate))
        src_lo, dst_lo = max(offset, 0), max(-offset, 0)
        n = min(len(wave) - src_lo, self.length - dst_lo)
        if n > 0:
            out[dst_lo : dst_lo + n] = wave[src_lo : src_lo + n]
        return out


def _video_window(container: Any, path: Any, start: float, num_frames: int, fps: float, short_side: int | None) -> np.ndarray:
    stream = video_stream(container, path)
    seek(container, stream, float(start))
    frames = _Frames(stream, float(start), num_frames, float(fps), short_side)
    for frame in container.decode(stream):
        frames.push(frame)
        if frames.done:
            break
    return frames.images(path)


def _audio_window(container: Any, start: float, duration: float, sample_rate: int) -> np.ndarray:
    stream = container.streams.audio[0] if container.streams.audio else None
    samples = _Samples(stream, float(start), float(duration), int(sample_rate))
    if stream is None:
        return samples.wave()
    seek(container, stream, float(start) - samples.margin)
    for frame in container.decode(stream):
        samples.push(frame)
        if samples.done:
            break
    return samples.wave()


