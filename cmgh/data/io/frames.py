"""Decoded video frames to one uint8 RGB array [T,H,W,3], written frame by frame into place.

Two ways. The plain conversion (optionally scaled to a short side, FFmpeg's area filter) is what
bare decoding and feature extraction use. With a :class:`Crop` (the packed stream's random resized
crop and flip), an FFmpeg filter graph crops the YUV frame, scales the box to the output square
(libswscale's bilinear filter, whose support widens with the downscaling factor: antialiased like
torchvision's ``antialias=True``), mirrors it and converts only those pixels to RGB: converting
the whole frame to RGB and resizing the crop with torchvision cost 2.8x as much on one core
(``benchmarks/stream.py``). Scaling runs in the frame's own pixel format and the small square
goes to RGB through libswscale's unscaled path (the one bare decoding uses): scaling and
converting in one swscale pass was 1.6x slower, flipping 3-byte RGB pixels (a C loop) 1.2x.

The pixels differ from torchvision's ``resized_crop`` of the full RGB frame by 1.9-2.8 levels of
255 per channel on average (a pan over a real photograph: 2.8; luma alone: 0.4-0.5): chroma is
resampled at its own half resolution here, after nearest-neighbour upsampling to full resolution
there. ``tests/data/io/test_frames.py`` pins the box, the filter and the flip exactly (against the
same crop cut from the YUV planes by hand) and the luma bound against torchvision.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

SCALE_FLAGS = "bilinear"  # swscale's antialiased bilinear (its support widens when downscaling)


@dataclass(frozen=True)
class Crop:
    """The box ``[top, top + height) x [left, left + width)`` of a frame (after any short-side
    scaling), scaled to ``size`` x ``size`` and mirrored left-right when ``flip``."""

    top: int
    left: int
    height: int
    width: int
    size: int
    flip: bool = False

    def check(self, frame_height: int, frame_width: int) -> None:
        if not (0 <= self.top and 0 <= self.left and 0 < self.height and 0 < self.width and self.size > 0):
            raise ValueError(f"crop box {self} is empty or negative")
        if self.top + self.height > frame_height or self.left + self.width > frame_width:
            raise ValueError(f"crop box {self} leaves the {frame_width}x{frame_height} frame")


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """``(width, height)`` with the short side at ``short_side``, the long side scaled and rounded to even (yuv420p)."""
    if min(width, height) == short_side:
        return width, height
    scale = short_side / min(width, height)
    w, h = (short_side, max(2, round(height * scale / 2) * 2)) if width <= height else (max(2, round(width * scale / 2) * 2), short_side)
    return int(w), int(h)


def to_rgb(frames: Sequence[Any], short_side: int | None = None, crop: Callable[[int, int], Crop] | None = None) -> np.ndarray:
    """uint8 [T,H,W,3] of PyAV video ``frames`` (a frame repeated in a row is converted once).

    ``short_side`` scales the frame first (area filter). ``crop`` is called once with the frame's
    ``(height, width)`` after that scaling and returns the box to cut, scale and mirror: the caller
    draws its random box from the size the frames really have, and FFmpeg does the rest.
    """
    clip = RGBClip(len(frames), short_side, crop)
    for frame in frames:
        clip.put(frame)
    return clip.array()


class RGBClip:
    """:func:`to_rgb` one frame at a time, as a decoder delivers them: each frame is converted into
    the clip's array when it is put, so a window's decoded frames are never all held at once (the
    decoder recycles their buffers) and no list of frames is stacked afterwards."""

    def __init__(self, length: int, short_side: int | None = None, crop: Callable[[int, int], Crop] | None = None) -> None:
        self.length, self.short_side, self.crop = length, short_side, crop
        self.rows = 0
        self.last: Any = None
        self.out: np.ndarray | None = None
        self.convert: Callable[[Any], np.ndarray] | None = None

    def put(self, frame: Any) -> None:
        """The next row: ``frame`` converted (or the row above copied when it is the same frame)."""
        if self.out is None:
            self._start(frame)
        assert self.out is not None and self.convert is not None
        if frame is self.last:
            self.out[self.rows] = self.out[self.rows - 1]
        else:
            self.out[self.rows] = self.convert(frame)
            self.last = frame
        self.rows += 1

    def array(self) -> np.ndarray:
        if self.out is None or self.rows != self.length:
            raise ValueError(f"clip has {self.rows} of {self.length} frames")
        return self.out

    def _start(self, first: Any) -> None:
        width, height = first.width, first.height
        if self.short_side is not None:
            width, height = scaled_size(width, height, int(self.short_side))
        box = self.crop(height, width) if self.crop is not None else None
        if box is None:
            self.convert, shape = _plain(width, height), (height, width)
        else:
            box.check(height, width)
            self.convert, shape = _crop_graph(first, width, height, box), (box.size, box.size)
        self.out = np.empty((self.length, *shape, 3), dtype=np.uint8)


def _plain(width: int, height: int) -> Callable[[Any], np.ndarray]:
    # One reformatter for the clip: VideoFrame.to_ndarray(format=...) builds a new SwsContext per
    # frame, which costs 5-30x the conversion itself.
    reformatter = VideoReformatter()

    def convert(frame: Any) -> np.ndarray:
        size: dict[str, Any] = {}
        if (frame.width, frame.height) != (width, height):
            size = {"width": width, "height": height, "interpolation": "AREA"}
        return reformatter.reformat(frame, format="rgb24", **size).to_ndarray()

    return convert


class _CropGraph:
    """buffer -> [scale to the short side] -> crop -> scale to the square -> [hflip] -> RGB -> sink,
    for frames of one size, format and colour tagging (any other frame is first brought to those).

    Kept per process for the next clip of the same kind (:func:`_crop_graph`): a clip's box goes to
    the crop filter as commands, and the scaler re-initialises itself for the new box size, which
    saved building the graph anew (~0.5 ms a clip, 2-3 % of a packed sample) with the same pixels.
    """

    def __init__(self, first: Any, width: int, height: int, size: int, flip: bool) -> None:
        self.shape = (first.width, first.height, first.format.name)
        self.reformatter: VideoReformatter | None = None
        graph = av.filter.Graph()
        graph.threads = 1  # the loader's parallelism is its worker processes; a pool per graph costs
        nodes = [
            graph.add(
                "buffer", video_size=f"{first.width}x{first.height}", pix_fmt=str(int(first.format)), time_base=str(first.time_base or "1/1000"),
                pixel_aspect="1/1", colorspace=str(int(first.colorspace)), range=str(int(first.color_range)),
            )
        ]
        if (width, height) != (first.width, first.height):
            nodes.append(graph.add("scale", f"w={width}:h={height}:flags=area"))
        self.crop = graph.add("crop", f"w={width}:h={height}:x=0:y=0:exact=1")
        nodes += [
            self.crop,
            graph.add("scale", f"w={size}:h={size}:flags={SCALE_FLAGS}"),
            graph.add("format", first.format.name),  # scale in the frame's format: 1.6x cheaper than scaling into RGB
        ]
        if flip:  # on the planes (SIMD), not on 3-byte RGB pixels (a C loop: 16 % of the graph's time)
            nodes.append(graph.add("hflip"))
        nodes += [graph.add("scale", f"flags={SCALE_FLAGS}"), graph.add("format", "rgb24"), graph.add("buffersink")]
        graph.link_nodes(*nodes).configure()
        self.graph = graph

    def set_box(self, box: Crop) -> None:
        for key, value in (("w", box.width), ("h", box.height), ("x", box.left), ("y", box.top)):
            self.crop.process_command(key, str(value))

    def __call__(self, frame: Any) -> np.ndarray:
        if (frame.width, frame.height, frame.format.name) != self.shape:  # the stream changed size mid-window
            self.reformatter = self.reformatter or VideoReformatter()
            width, height, fmt = self.shape
            frame = self.reformatter.reformat(frame, width=width, height=height, format=fmt, interpolation="AREA", threads=1)
        try:
            self.graph.vpush(frame)
            return self.graph.vpull().to_ndarray()
        except BaseException:  # a frame may be left inside: never hand this graph out again
            for key in [key for key, graph in _GRAPHS.items() if graph is self]:
                del _GRAPHS[key]
            raise


_GRAPHS: dict[tuple[Any, ...], _CropGraph] = {}  # per process and thread, least recently used first
_KEEP = 8


def _crop_graph(first: Any, width: int, height: int, box: Crop) -> _CropGraph:
    """A graph for ``first``'s kind of frame with ``box`` set: this process's kept one, or a new one."""
    key = (os.getpid(), threading.get_ident(), first.width, first.height, first.format.name, str(first.time_base), int(first.colorspace), int(first.color_range), width, height, box.size, box.flip)
    graph = _GRAPHS.pop(key, None) or _CropGraph(first, width, height, box.size, box.flip)
    graph.set_box(box)
    _GRAPHS[key] = graph
    while len(_GRAPHS) > _KEEP:
        del _GRAPHS[next(iter(_GRAPHS))]
    return graph
