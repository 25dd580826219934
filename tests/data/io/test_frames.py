"""RGB conversion of decoded frames with the crop, scale and flip done by FFmpeg (the packed stream's
augmentation), on a real H.264 clip: the box, the filter, the flip, against independent references."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from av.video.reformatter import VideoReformatter
from torchvision.transforms.v2 import functional as F

from cmgh.data.io import encode, media
from cmgh.data.io.frames import Crop, to_rgb

T, H, W, FPS = 6, 96, 128, 8


def smooth(seed: int, channels: int) -> np.ndarray:
    """[T,H,W,3] smooth random texture panning right one pixel a frame (gray when ``channels`` is 1)."""
    coarse = torch.from_numpy(np.random.default_rng(seed).random((1, channels, 12, 20), dtype=np.float32))
    big = torch.nn.functional.interpolate(coarse, size=(H, W + T), mode="bicubic", align_corners=False)[0]
    image = (big.clamp(0, 1) * 200 + 25).round().to(torch.uint8).permute(1, 2, 0).expand(H, W + T, 3).numpy()
    return np.stack([image[:, t : t + W] for t in range(T)])


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("frames")
    return {name: encode.write_mp4(base / f"{name}.mp4", smooth(1, channels), FPS) for name, channels in (("gray", 1), ("colour", 3))}


def decoded(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))[:T]


def same_filter_reference(frame: av.VideoFrame, box: Crop) -> np.ndarray:
    """The box cut from the YUV 4:2:0 planes in numpy (even offsets and sides), scaled and converted by
    a VideoReformatter with the same swscale filter: another route to what the filter graph does."""
    yuv = frame.to_ndarray(format="yuv420p")
    h, w = frame.height, frame.width
    y = yuv[:h]
    u, v = (yuv[h + k * h // 4 : h + (k + 1) * h // 4].reshape(h // 2, w // 2) for k in range(2))
    t, l, bh, bw = box.top, box.left, box.height, box.width
    planes = [y[t : t + bh, l : l + bw]] + [p[t // 2 : (t + bh) // 2, l // 2 : (l + bw) // 2].reshape(-1, bw) for p in (u, v)]
    cut = av.VideoFrame.from_ndarray(np.concatenate(planes), format="yuv420p")
    small = VideoReformatter().reformat(cut, width=box.size, height=box.size, interpolation="BILINEAR")
    return VideoReformatter().reformat(small, format="rgb24").to_ndarray()


def test_the_box_is_cut_and_scaled_as_the_same_filter_does_it_by_hand(clips) -> None:
    frames = decoded(clips["colour"])
    # the first two share a kept graph (same frames and square): the second box is set by command
    for box in (Crop(0, 0, H, W, 64), Crop(10, 24, 60, 80, 64), Crop(36, 40, 48, 48, 72), Crop(2, 6, 88, 92, 32), Crop(0, 0, H, W, 64)):
        out = to_rgb(frames, crop=lambda height, width, box=box: box)
        assert out.shape == (T, box.size, box.size, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, np.stack([same_filter_reference(f, box) for f in frames]))


def test_an_unscaled_box_is_a_slice_of_the_plain_frames_and_flip_mirrors_it(clips) -> None:
    frames = decoded(clips["colour"])
    plain = to_rgb(frames)
    np.testing.assert_array_equal(plain, media.decode_video(clips["colour"], 0.0, T, FPS))  # the plain way is bare decoding's
    box = Crop(8, 20, 64, 64, 64)
    cut = to_rgb(frames, crop=lambda h, w: box)
    np.testing.assert_array_equal(cut, plain[:, 8:72, 20:84])
    flipped = to_rgb(frames, crop=lambda h, w: Crop(8, 20, 64, 64, 64, flip=True))
    np.testing.assert_array_equal(flipped, cut[:, :, ::-1])
    resized = to_rgb(frames, crop=lambda h, w: Crop(10, 24, 60, 80, 48))
    np.testing.assert_array_equal(to_rgb(frames, crop=lambda h, w: Crop(10, 24, 60, 80, 48, flip=True)), resized[:, :, ::-1])


def test_scaled_boxes_match_torchvision_antialiased_resize_on_gray_frames(clips) -> None:
    """Where chroma plays no part, swscale's bilinear and torchvision's antialiased bilinear agree to
    well under a level, odd offsets and sides, up- and downscaling alike; a box 2 pixels off does not."""
    frames = decoded(clips["gray"])
    plain = torch.from_numpy(to_rgb(frames)).permute(0, 3, 1, 2)
    for top, left, h, w, size in ((0, 0, H, W, 64), (7, 13, 61, 83, 64), (20, 33, 40, 40, 72), (1, 2, 95, 71, 48)):
        box = Crop(top, left, h, w, size)
        out = torch.from_numpy(to_rgb(frames, crop=lambda height, width, box=box: box)).permute(0, 3, 1, 2)
        want = F.resized_crop(plain, top, left, h, w, [size, size], antialias=True)
        off = F.resized_crop(plain, top + 2, left + 2, h - 2, w - 2, [size, size], antialias=True)
        assert (out.int() - want.int()).abs().float().mean() < 0.6
        assert (out.int() - off.int()).abs().float().mean() > 5.0


def test_the_box_is_drawn_on_the_short_side_scaled_frame_and_repeats_are_kept(clips) -> None:
    frames = decoded(clips["gray"])
    seen = []

    def draw(height: int, width: int) -> Crop:
        seen.append((height, width))
        return Crop(0, 0, height, height, 32)

    out = to_rgb([*frames, frames[-1]], short_side=48, crop=draw)
    assert seen == [(48, 64)]  # once per clip, from the size after short-side scaling
    assert out.shape == (T + 1, 32, 32, 3) and np.array_equal(out[-1], out[-2])
    small = to_rgb(frames, short_side=48)
    assert small.shape == (T, 48, 64, 3)
    want = F.resize(torch.from_numpy(small[:, :, :48]).permute(0, 3, 1, 2), [32, 32], antialias=True).permute(0, 2, 3, 1)
    assert (torch.from_numpy(out[:T]).int() - want.int()).abs().float().mean() < 2.0  # scaled twice, each pass its own rounding


def test_a_box_outside_the_frame_is_refused(clips) -> None:
    frames = decoded(clips["gray"])
    with pytest.raises(ValueError, match="leaves the 128x96 frame"):
        to_rgb(frames, crop=lambda h, w: Crop(40, 0, 60, 60, 32))
    with pytest.raises(ValueError, match="empty"):
        to_rgb(frames, crop=lambda h, w: Crop(0, 0, 0, 60, 32))
