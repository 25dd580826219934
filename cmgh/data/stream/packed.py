"""The packed format's reader: a corpus a :class:`~cmgh.data.stream.pretrain.PretrainStream` draws from.

A source has ``__len__``, ``order(epoch, seed)`` (the permutation of its samples in one corpus
epoch) and ``sample(i, rng)`` (one sample as tensors, its randomness from ``rng`` only).
:class:`PackedSource` reads a packed corpus (WebDataset tar shards + ``index.parquet`` with byte
offsets, written by :mod:`cmgh.data.extract.packed`). Per sample a random window of the packed
clip, its audio, the captions nearest the window, and VATT's augmentation (the resized crop and
flip done by FFmpeg while decoding, the colour jitter as ``jitter``, for the training device). The
decoded format's source: :mod:`cmgh.data.stream.decoded`.
The shards are read where they lie: from a file system by ``pread`` (:class:`LocalShards`), or from
object storage by byte range when ``features.packed.remote.url`` is set
(:class:`~cmgh.data.stream.remote.RemoteShards`); the index is always a local file.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from cmgh import layout
from cmgh.data.stream import augment
from cmgh.data.io import media
from cmgh.data.datasets.items import nearest
from cmgh.data.stream.mixing import generator
from cmgh.data.stream.remote import RemoteShards, RemoteSpec
from cmgh.data.stream.truth import check_videos, clip_flags
from cmgh.data.datasets.noise_labels import ClipTruth
from cmgh.data.io.tables import REMAKE, read_parquet
from cmgh.data.extract.text import Vocabulary
from cmgh.errors import DataError
from cmgh.io import redacted

Sample = dict[str, Any]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipSpec:
    """The features a streamed sample has (picklable, read once from ``features``)."""

    frames: int
    fps: float
    short_side: int
    sample_rate: int
    max_tokens: int
    candidates: int
    shuffle_buffer: int
    augment: augment.AugmentSpec

    @classmethod
    def from_features(cls, features: Mapping[str, Any]) -> ClipSpec:
        return cls(
            frames=int(features["video"]["frames"]),
            fps=float(features["video"]["fps"]),
            short_side=int(features["video"]["short_side"]),
            sample_rate=int(features["audio"]["sample_rate"]),
            max_tokens=int(features["text"]["max_tokens"]),
            candidates=int(features["text"]["candidates"]),
            shuffle_buffer=int(features["packed"]["shuffle_buffer"]),
            augment=augment.AugmentSpec.from_features(features),
        )

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


class MemberFile(io.RawIOBase):
    """Bytes ``[offset, offset + size)`` of a shard as a read-only seekable file, read with
    ``pread(n, position)`` (``os.pread`` on a descriptor: no shared file offset, so one inherited over
    ``fork`` stays correct; or :meth:`RemoteShards.pread`, ranged GETs through a block cache).

    Handed to FFmpeg instead of the member's bytes, it reads the packed mp4's header (its index
    comes first) and the packets of the window only: a long clip is not read whole per sample.
    """

    def __init__(self, pread: Callable[[int, int], bytes], offset: int, size: int) -> None:
        super().__init__()
        self.pread, self.offset, self.size = pread, int(offset), int(size)
        self.pos = self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        n = self.size - self.pos if n is None or n < 0 else min(n, self.size - self.pos)
        if n <= 0:
            return b""
        data = self.pread(n, self.offset + self.pos)
        self.pos += len(data)
        self.bytes_read += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.size}[whence]
        self.pos = max(0, base + int(pos))
        return self.pos

    def tell(self) -> int:
        return self.pos


class Shards(Protocol):
    """Where a packed corpus's tar shards are read from."""

    def name(self, shard: int) -> str: ...  # the shard's path or (masked) URL, for messages
    def sizes(self, shards: Iterable[int]) -> dict[int, int]: ...  # the size of each that exists
    def size(self, shard: int) -> int: ...
    def pread(self, shard: int, n: int, pos: int) -> bytes: ...


class LocalShards:
    """Shards on a file system, read by ``pread`` from descriptors opened per process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files: dict[int, tuple[int, int]] = {}  # shard -> (descriptor, file size)
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_files": {}}

    def name(self, shard: int) -> str:
        return str(layout.shard_file(self.folder, shard, "tar"))

    def sizes(self, shards: Iterable[int]) -> dict[int, int]:
        out = {}
        for shard in shards:
            try:
                out[shard] = layout.shard_file(self.folder, shard, "tar").stat().st_size
            except OSError:
                pass
        return out

    def _open(self, shard: int) -> tuple[int, int]:
        if os.getpid() != self._pid:
            self._files, self._pid = {}, os.getpid()
        if shard not in self._files:
            try:
                fd = os.open(self.name(shard), os.O_RDONLY)
            except OSError as exc:
                raise DataError(f"{self.name(shard)}: missing: cannot open shard ({exc.strerror})") from None
            self._files[shard] = (fd, os.fstat(fd).st_size)
        return self._files[shard]

    def size(self, shard: int) -> int:
        return self._open(shard)[1]

    def pread(self, shard: int, n: int, pos: int) -> bytes:
        return os.pread(self._open(shard)[0], n, pos)


class PackedSource:
    """Samples of one packed corpus; members are read by ``pread`` from descriptors opened per
    process, or by byte range from object storage (``features.packed.remote``: ``shards`` is then a
    :class:`~cmgh.data.stream.remote.RemoteShards`, which counts the requests and bytes fetched).
    ``device_jitter=False`` applies the colour jitter in the loader (the old way, for comparison) and
    ships the identity map; the default leaves it to :func:`augment.apply_jitter`. ``bytes_read``
    counts the bytes this process read from the members. With ``truth`` (the oracle control only)
    each sample carries the ground-truth flags of the window it drew."""

    def __init__(
        self, folder: str | Path, features: Mapping[str, Any], vocab: Vocabulary, dataset: str | None = None, device_jitter: bool = True,
        truth: ClipTruth | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.dataset = dataset or self.folder.name
        path = self.folder / layout.FEATURE_INDEX
        if not path.is_file():
            raise DataError(f"{path}: packed index not found (run `cmgh data extract` with features.format=packed)")
        index = read_parquet(path, "packed index")
        missing = [c for c in layout.PACKED_INDEX_COLUMNS if c not in index.columns]
        if missing:
            raise DataError(f"{path}: packed index lacks columns {missing}; expected {list(layout.PACKED_INDEX_COLUMNS)}")
        self.index = index.sort_values(["shard", "mp4_offset"], kind="stable").reset_index(drop=True)
        self.spec = ClipSpec.from_features(features)
        remote = RemoteSpec.from_features(features)
        self.shards: Shards = LocalShards(self.folder)
        if remote is not None:
            self.shards = RemoteShards(remote, self.folder.name)
            log.info("%s: shards read by byte range from %s/ (cache %.0f MiB per process)", self.dataset, redacted(self.shards.url), remote.cache_bytes / 2**20)
        self.vocab = vocab
        self._shard_rows = {int(s): g.index.to_numpy() for s, g in self.index.groupby("shard", sort=True)}
        self._columns = {c: self.index[c].to_numpy() for c in layout.PACKED_INDEX_COLUMNS}
        self._check_shards()
        self.truth = truth
        if truth is not None:
            if "video_id" not in self.index.columns:
                raise DataError(f"{path}: no video_id column to match with {layout.NOISE_LABELS}")
            self._videos = self.index["video_id"].to_numpy()
            check_videos(truth, self.dataset, list(dict.fromkeys(self._videos.tolist())))
        self.device_jitter = bool(device_jitter)
        self.bytes_read = 0

    def __len__(self) -> int:
        return len(self.index)

    def _check_shards(self) -> None:
        """Every tar the index points into exists and holds the members' byte ranges (one stat per
        shard, or one bucket listing per thousand): a truncated shard is refused before a run, not
        skipped sample by sample."""
        ends = self.index[["mp4_offset", "mp4_size"]].sum(axis=1).combine(self.index[["json_offset", "json_size"]].sum(axis=1), max)
        needed = {int(shard): int(end) for shard, end in ends.groupby(self.index["shard"]).max().items()}
        sizes = self.shards.sizes(needed)
        for shard, end in needed.items():
            path = self.shards.name(shard)
            if shard not in sizes:
                raise DataError(f"{path}: missing (expected the tar shard the packed index points into; {REMAKE})")
            if sizes[shard] < end:
                raise DataError(f"{path}: truncated: {sizes[shard]} bytes, the index reads up to byte {end} ({REMAKE})")

    def order(self, epoch: int, seed: int) -> np.ndarray:
        """Shards permuted, then samples shuffled within consecutive blocks of ``shuffle_buffer``:
        a reader walks a few shards at a time instead of seeking all over the corpus."""
        rng = generator(seed, "order", self.dataset, epoch)
        shards = sorted(self._shard_rows)
        rows = np.concatenate([self._shard_rows[shards[i]] for i in rng.permutation(len(shards))])
        block = self.spec.shuffle_buffer
        for lo in range(0, len(rows), block):
            rows[lo : lo + block] = rng.permutation(rows[lo : lo + block])
        return rows

    def member_name(self, i: int, suffix: str) -> str:
        return f"{self.shards.name(int(self._columns['shard'][i]))}:{self._columns['key'][i]}.{suffix}"

    def _member(self, i: int, member: str) -> MemberFile:
        shard = int(self._columns["shard"][i])
        length = self.shards.size(shard)
        size, offset = int(self._columns[f"{member}_size"][i]), int(self._columns[f"{member}_offset"][i])
        if offset + size > length:
            raise DataError(f"{self.member_name(i, member)}: corrupt: the member ends at byte {offset + size}, past the shard's {length}")
        return MemberFile(functools.partial(self.shards.pread, shard), offset, size)

    def _read(self, i: int, member: str) -> bytes:
        """A member's bytes, whole."""
        data = self._member(i, member).read()
        self.bytes_read += len(data)
        return data

    def _mp4(self, i: int) -> MemberFile | bytes:
        return self._member(i, "mp4")

    def sample(self, i: int, rng: np.random.Generator) -> Sample:
        spec = self.spec
        try:
            meta = json.loads(self._read(i, "json"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{self.member_name(i, 'json')}: corrupt: not JSON ({exc})") from None
        duration = float(self._columns["duration"][i])
        start = float(rng.uniform(0.0, max(0.0, duration - spec.seconds)))
        mp4 = self._mp4(i)
        drawn: list[augment.AugmentParams] = []

        def crop(height: int, width: int) -> media.Crop:  # drawn from the decoded frames' size, cut by FFmpeg
            drawn.append(augment.draw(spec.augment, rng, height, width))
            return augment.crop_of(drawn[0], spec.augment.size)

        try:
            video, audio = media.decode_clip(
                mp4, start, spec.frames, spec.fps, spec.sample_rate, short_side=spec.short_side, name=self.member_name(i, "mp4"),
                crop=crop, container_format="mp4",
            )
        finally:
            if isinstance(mp4, MemberFile):
                self.bytes_read += mp4.bytes_read
        params = drawn[0]
        text, mask = self._captions(caption_track(meta, self.member_name(i, "json")), start, start + spec.seconds)
        jitter = augment.jitter_map(params) if self.device_jitter else augment.IDENTITY
        flags = {} if self.truth is None else clip_flags(self.truth, self.dataset, self._videos[i], start, start + spec.seconds)
        return {
            "video": augment.colour(torch.from_numpy(video), params, jitter=not self.device_jitter),
            "jitter": torch.from_numpy(jitter.copy()),
            "audio": torch.from_numpy(audio),
            "text": text,
            "text_mask": mask,
            "has_text": bool(mask.any()),
            "has_audio": bool(self._columns["has_audio"][i]),  # False: the source has no audio stream, the waveform is silence
            "item_id": str(self._columns["item_id"][i]),
            "dataset": self.dataset,
            "clip_start": start,
            "clip_end": start + spec.seconds,
            **flags,
        }

    def _captions(self, captions: list[tuple[float, float, str]], start: float, end: float) -> tuple[torch.Tensor, torch.Tensor]:
        k, length = self.spec.candidates, self.spec.max_tokens
        text = np.zeros((k, length), dtype=np.int64)
        mask = np.zeros(k, dtype=bool)
        if captions:
            starts = np.array([c[0] for c in captions])
            ends = np.array([c[1] for c in captions])
            for row, j in enumerate(nearest(starts, ends, start, end, k)):
                text[row] = self.vocab.encode(captions[j][2], length)
                mask[row] = True
        return torch.from_numpy(text), torch.from_numpy(mask)


def caption_track(meta: Any, where: str) -> list[tuple[float, float, str]]:
    """A packed sample's JSON member, checked by shape at the boundary: ``{"captions": [{"start", "end",
    "text"}, ...]}`` (captions optional). Valid JSON of another shape is a :class:`DataError` naming the
    field, so the loader substitutes the sample (counted) instead of the run dying on a TypeError."""
    if not isinstance(meta, dict):
        raise DataError(f"{where}: corrupt: a JSON {type(meta).__name__} (expected an object with a captions list)")
    captions = meta.get("captions")
    if captions is None:
        return []
    if not isinstance(captions, list):
        raise DataError(f"{where}: corrupt: captions is a JSON {type(captions).__name__} (expected a list of {{start, end, text}})")
    track = []
    for j, caption in enumerate(captions):
        if not isinstance(caption, dict):
            raise DataError(f"{where}: corrupt: captions[{j}] is a JSON {type(caption).__name__} (expected an object {{start, end, text}})")
        times = []
        for field in ("start", "end"):
            value = caption.get(field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise DataError(f"{where}: corrupt: captions[{j}].{field} is {value!r} (expected a finite number of seconds)")
            times.append(float(value))
        if not isinstance(caption.get("text"), str):
            raise DataError(f"{where}: corrupt: captions[{j}].text is {caption.get('text')!r} (expected a string)")
        track.append((times[0], times[1], caption["text"]))
    return track
