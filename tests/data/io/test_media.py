"""PyAV helpers on real files: codecs, sizes, timestamps, padding, determinism and error reporting."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from cmgh.data.io import encode, media
from cmgh.errors import DataError

FPS, RATE, T, H, W = 8, 16000, 16, 48, 64


def coded_frames() -> np.ndarray:
    """Frames whose top band encodes the frame index (brightness 10*i) over random texture."""
    rng = np.random.default_rng(0)
    frames = (rng.random((T, H, W, 3)) * 255).astype(np.uint8)
    frames[:, :16] = (np.arange(T, dtype=np.uint8) * 15)[:, None, None, None]
    return frames


def tone(seconds: float, freq: float = 440.0, rate: int = RATE, phase: float = 0.0) -> np.ndarray:
    t = phase + np.arange(int(round(seconds * rate))) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def frame_index(frames: np.ndarray) -> np.ndarray:
    return np.round(frames[:, 2:14].astype(float).mean(axis=(1, 2, 3)) / 15).astype(int)


@pytest.fixture(scope="module", params=["h264", "mpeg4"])
def clip(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp(request.param) / "clip.mp4"
    encode.write_mp4(path, coded_frames(), FPS, tone(T / FPS), RATE, request.param)
    return path, request.param


def test_probe_reports_streams(clip: tuple[Path, str]) -> None:
    path, codec = clip
    info = media.probe(path)
    assert info["num_frames"] == T and info["fps"] == pytest.approx(FPS)
    assert (info["width"], info["height"]) == (W, H)
    assert info["duration"] == pytest.approx(T / FPS, abs=0.05)
    assert info["has_audio"] and info["sample_rate"] == RATE
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == codec
        assert container.streams.audio[0].codec_context.name == "aac"
        assert container.format.name.startswith("mov,mp4")


def test_decode_video_samples_by_timestamp(clip: tuple[Path, str]) -> None:
    path, _ = clip
    frames = media.decode_video(path, 0.5, 6, 4.0)
    assert frames.shape == (6, H, W, 3) and frames.dtype == np.uint8
    # 0.5 s at 8 fps is frame 4; sampling at 4 fps takes every other frame.
    assert frame_index(frames).tolist() == [4, 6, 8, 10, 12, 14]


def test_decode_video_pads_short_clip_with_last_frame(clip: tuple[Path, str]) -> None:
    path, _ = clip
    frames = media.decode_video(path, 1.5, 5, 4.0)
    assert frame_index(frames).tolist() == [12, 14, 15, 15, 15]


def test_decode_audio_rate_length_and_alignment(clip: tuple[Path, str]) -> None:
    path, _ = clip
    wave = media.decode_audio(path, 0.5, 1.0, 8000)
    assert wave.shape == (8000,) and wave.dtype == np.float32
    expected = tone(1.0, rate=8000, phase=0.5)
    assert np.corrcoef(wave[200:-200], expected[200:-200])[0, 1] > 0.99
    tail = media.decode_audio(path, 1.5, 1.0, 8000)  # half past the end: zero padded
    assert tail.shape == (8000,)
    assert np.abs(tail[:3000]).max() > 0.3 and np.abs(tail[-3000:]).max() == 0.0


def test_decode_clip_is_video_and_audio_in_one_pass_and_crops_in_ffmpeg(clip: tuple[Path, str]) -> None:
    path, _ = clip
    seen: list[tuple[int, int]] = []

    def box(height: int, width: int) -> media.Crop:
        seen.append((height, width))
        return media.Crop(8, 16, 32, 32, 32, flip=True)

    for start in (0.0, 0.6, 1.3):  # 1.3: the window runs past the end (last frame repeated, audio padded)
        video, audio = media.decode_clip(path, start, 6, 4.0, RATE)
        np.testing.assert_array_equal(video, media.decode_video(path, start, 6, 4.0))
        np.testing.assert_array_equal(audio, media.decode_audio(path, start, 1.5, RATE))  # audio decoded after the video
        seen.clear()
        cropped, same = media.decode_clip(path, start, 6, 4.0, RATE, crop=box, container_format="mp4")
        assert seen == [(H, W)]  # drawn once, from the decoded frames' size
        np.testing.assert_array_equal(cropped, video[:, 8:40, 16:48][:, :, ::-1])  # an unscaled box: the very pixels, mirrored
        np.testing.assert_array_equal(same, audio)


def test_writes_are_byte_identical(tmp_path: Path) -> None:
    frames, audio = coded_frames(), tone(2.0)
    for codec in ("h264", "mpeg4"):
        a = encode.write_mp4(tmp_path / f"a_{codec}.mp4", frames, FPS, audio, RATE, codec)
        b = encode.write_mp4(tmp_path / f"b_{codec}.mp4", frames, FPS, audio, RATE, codec)
        assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_h264.mp4", "a_mpeg4.mp4", "b_h264.mp4", "b_mpeg4.mp4"]


def test_repeated_writes_of_moving_content_are_byte_identical(tmp_path: Path) -> None:
    """Interleaved writes of several moving clips: encoder state must not leak between files.

    (x264's macroblock-tree rate control made this fail at 64x64 before it was switched off.)
    """
    from cmgh.data.datasets.concepts import build_concepts, render_audio, render_video

    concepts = build_concepts(3, seed=0)
    clips = []
    for c in concepts:
        rng = np.random.default_rng(c.index)
        clips.append((render_video(c, rng, 2.0, FPS, 64, 64), render_audio(c, rng, 2.0, RATE)))
    seen: dict[int, set[bytes]] = {i: set() for i in range(len(clips))}
    for _ in range(3):
        for i, (frames, audio) in enumerate(clips):
            seen[i].add(encode.write_mp4(tmp_path / "clip.mp4", frames, FPS, audio, RATE, "h264").read_bytes())
    assert all(len(versions) == 1 for versions in seen.values())


def test_video_without_audio_decodes_silence(tmp_path: Path) -> None:
    path = encode.write_mp4(tmp_path / "silent.mp4", coded_frames(), FPS, None)
    assert media.probe(path)["has_audio"] is False
    assert not media.decode_audio(path, 0.0, 0.5, 8000).any()


def test_missing_and_corrupt_files_raise_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.mp4: missing"):
        media.decode_video(tmp_path / "nope.mp4", 0.0, 4, 4.0)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(1).bytes(4096))
    for call in (lambda: media.probe(garbage), lambda: media.decode_video(garbage, 0, 4, 4.0), lambda: media.decode_audio(garbage, 0, 1, 8000)):
        with pytest.raises(DataError, match=r"garbage\.mp4: corrupt: "):
            call()
    good = encode.write_mp4(tmp_path / "good.mp4", coded_frames(), FPS, tone(2.0), RATE)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"truncated\.mp4: corrupt: "):
        media.decode_video(truncated, 0.0, 8, 4.0)
