"""The decoded format's reader: torch datasets and loaders over the extracted ``.npy`` shards
(memory-mapped, opened lazily per worker, written by :mod:`cmgh.data.extract.decoded`), and
:class:`DecodedSource`, a decoded corpus for the pre-training stream (fixed windows, no
augmentation, identity ``jitter``).

A dataset checks on opening that every shard its index points into has its arrays, long enough
(headers only), so a truncated or deleted shard is one error naming the file before a run
starts, not a crash in a loader worker hours into it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from cmgh import layout
from cmgh.data.datasets.noise_labels import ClipTruth
from cmgh.data.io.tables import REMAKE, load_array, read_parquet
from cmgh.data.stream import augment
from cmgh.data.stream.mixing import generator
from cmgh.data.stream.truth import clip_flags
from cmgh.errors import DataError

Sample = dict[str, Any]


def read_index(root: Path) -> pd.DataFrame:
    return read_parquet(Path(root) / layout.FEATURE_INDEX, "feature index")


def check_shards(root: Path, index: pd.DataFrame, names: Sequence[str]) -> None:
    """Each shard ``index`` points into has arrays ``names`` with a row for every index row."""
    if index.empty:
        return
    for shard, row in index.groupby("shard")["row"].max().items():
        for name in names:
            path = layout.shard_file(root, int(shard), f"{name}.npy")
            rows = load_array(path, f"{name} array of shard {int(shard)}").shape[0]
            if rows <= int(row):
                raise DataError(f"{path}: truncated: {rows} rows, the index asks for row {int(row)} ({REMAKE})")


class ShardedClips(Dataset[Sample]):
    """Clips of one extracted dataset: ``video`` uint8 [T,H,W,3], ``audio`` float32 [S], and text.

    Datasets without text (Kinetics, AudioSet, MSR-VTT videos) still yield ``text``/``text_mask``
    filled with padding and ``has_text = False`` when ``text_shape`` is given, so that VATT's
    mixture of HowTo100M triplets and AudioSet video-audio pairs batches together.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | Sequence[str] | None = None,
        modalities: Sequence[str] = ("video", "audio", "text"),
        text_shape: tuple[int, int] | None = None,
        label_columns: Sequence[str] = (),
        where: Callable[[pd.DataFrame], pd.Series] | None = None,
    ) -> None:
        self.root = Path(root)
        index = read_index(self.root)
        if split is not None:
            if "split" not in index.columns:
                raise DataError(f"{self.root}: index has no 'split' column, cannot select split {split!r}")
            wanted = [split] if isinstance(split, str) else list(split)
            index = index[index["split"].isin(wanted)]
        if where is not None:
            index = index[where(index)]
        self.index = index.reset_index(drop=True)
        self.modalities = tuple(modalities)
        self.text_shape = text_shape
        self.label_columns = tuple(label_columns)
        self._shards: dict[tuple[int, str], np.ndarray] = {}
        self._has_text = layout.shard_file(self.root, 0, "text.npy").exists()
        text = ("text", "text_mask") if "text" in self.modalities and self._has_text else ()
        check_shards(self.root, self.index, [*(m for m in ("video", "audio") if m in self.modalities), *text])
        self._positions = self.index[["shard", "row"]].to_numpy(dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_shards"] = {}  # memory maps are reopened in each worker
        return state

    def _array(self, shard: int, name: str) -> np.ndarray:
        key = (shard, name)
        if key not in self._shards:
            self._shards[key] = load_array(layout.shard_file(self.root, shard, f"{name}.npy"), f"{name} array of shard {shard}")
        return self._shards[key]

    def __getitem__(self, i: int) -> Sample:
        shard, row = (int(v) for v in self._positions[i])
        sample: Sample = {"index": i}
        if "video" in self.modalities:
            sample["video"] = torch.from_numpy(np.array(self._array(shard, "video")[row]))
        if "audio" in self.modalities:
            sample["audio"] = torch.from_numpy(np.array(self._array(shard, "audio")[row]))
        if "text" in self.modalities:
            if self._has_text:
                sample["text"] = torch.from_numpy(np.array(self._array(shard, "text")[row], dtype=np.int64))
                sample["text_mask"] = torch.from_numpy(np.array(self._array(shard, "text_mask")[row]))
                sample["has_text"] = bool(sample["text_mask"].any())
            elif self.text_shape is not None:
                sample["text"] = torch.zeros(self.text_shape, dtype=torch.int64)
                sample["text_mask"] = torch.zeros(self.text_shape[0], dtype=torch.bool)
                sample["has_text"] = False
        for column in self.label_columns:
            sample[column] = self.index.at[i, column]
        return sample


def collate(samples: list[Sample]) -> Sample:
    """Stack tensors; multi-label lists stay lists (turned into multi-hot by the consumer)."""
    out: Sample = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], (bool, int, float, np.integer, np.floating, np.bool_)):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    return out


def make_loader(
    dataset: Dataset[Sample],
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader[Sample]:
    """A deterministic loader: the shuffle order depends only on ``seed`` (and the epoch)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate,
        generator=generator,
        persistent_workers=num_workers > 0,
    )


class TokenizedTexts(Dataset[Sample]):
    """MSR-VTT captions or 1k-A queries saved beside the shards: ``text`` int64 [L] + table row."""

    def __init__(self, root: str | Path, name: str = "test_1ka") -> None:
        self.root = Path(root)
        path, table = layout.tokenized_texts(self.root, name)
        if not path.is_file():
            raise DataError(f"{path}: tokenized texts not found (run `cmgh data extract --dataset msrvtt`)")
        self.tokens = load_array(path, f"tokenized {name}", mmap=False)
        self.table = read_parquet(table, f"table of the tokenized {name}")

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> Sample:
        return {"text": torch.from_numpy(self.tokens[i].astype(np.int64)), "video_id": self.table.at[i, "video_id"], "index": i}


class DecodedSource:
    """Samples of one extracted (decoded) corpus: fixed windows, no augmentation, text as stored.
    With ``truth`` (the oracle control only) each sample carries its clip's ground-truth flags,
    matched once here: the windows are fixed."""

    def __init__(
        self, folder: str | Path, text_shape: tuple[int, int], dataset: str | None = None, split: tuple[str, ...] | None = None,
        truth: ClipTruth | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.dataset = dataset or self.folder.name
        self.clips = ShardedClips(self.folder, split=split, modalities=("video", "audio", "text"), text_shape=text_shape)
        index = self.clips.index
        self._ids = index["item_id"].astype(str).to_numpy()
        nan = np.full(len(index), np.nan)
        self._starts = index["clip_start"].to_numpy(dtype=float) if "clip_start" in index.columns else nan
        self._ends = index["clip_end"].to_numpy(dtype=float) if "clip_end" in index.columns else nan
        self._audio = index["has_audio"].to_numpy(dtype=bool) if "has_audio" in index.columns else np.ones(len(index), dtype=bool)
        self.truth = truth
        self._flags: list[dict[str, bool]] | None = None
        if truth is not None:
            if "video_id" not in index.columns:
                raise DataError(f"{self.folder / layout.FEATURE_INDEX}: no video_id column to match with {layout.NOISE_LABELS}")
            self._flags = [clip_flags(truth, self.dataset, v, s, e)
                           for v, s, e in zip(index["video_id"], self._starts, self._ends, strict=True)]

    def __len__(self) -> int:
        return len(self.clips)

    def order(self, epoch: int, seed: int) -> np.ndarray:
        return generator(seed, "order", self.dataset, epoch).permutation(len(self))

    def sample(self, i: int, rng: np.random.Generator) -> Sample:
        sample = self.clips[int(i)]
        sample.pop("index", None)
        sample.update(
            item_id=str(self._ids[i]), dataset=self.dataset, clip_start=float(self._starts[i]), clip_end=float(self._ends[i]),
            has_audio=bool(self._audio[i]),
            jitter=torch.from_numpy(augment.IDENTITY.copy()),
        )
        if self._flags is not None:
            sample.update(self._flags[i])
        return sample
