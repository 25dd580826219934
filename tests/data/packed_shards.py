"""Packed shards written per the packed-format contract, for the stream's tests and benchmark
(tar members ``<key>.mp4`` + ``<key>.json``, ``index.parquet`` with the members' byte offsets)."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cmgh import layout


@dataclass
class PackedClip:
    item_id: str
    mp4: bytes
    duration: float
    fps: float
    sample_rate: int
    has_audio: bool = True
    captions: list[dict] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)


def write_packed(folder: Path, dataset: str, clips: Sequence[PackedClip], shard_size: int) -> Path:
    """Shards of ``shard_size`` samples and the index; returns ``folder``."""
    rows = []
    for shard, lo in enumerate(range(0, len(clips), shard_size)):
        path = layout.shard_file(folder, shard, "tar")
        path.parent.mkdir(parents=True, exist_ok=True)
        chunk = clips[lo : lo + shard_size]
        metas = {}
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for clip in chunk:
                key = clip.item_id.replace(".", "_")
                meta = {
                    "key": key, "item_id": clip.item_id, "dataset": dataset, "source_id": clip.item_id,
                    "source": f"{clip.item_id}.mp4", "duration": clip.duration, "fps": clip.fps,
                    "sample_rate": clip.sample_rate, "has_audio": clip.has_audio, "captions": clip.captions, "labels": clip.labels,
                }
                metas[key] = meta
                for suffix, data in (("mp4", clip.mp4), ("json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, _Bytes(data))
        with tarfile.open(path) as tar:
            members = {m.name: m for m in tar.getmembers()}
        for key, meta in metas.items():
            mp4, js = members[f"{key}.mp4"], members[f"{key}.json"]
            rows.append({
                "item_id": meta["item_id"], "key": key, "shard": shard, "mp4_offset": mp4.offset_data, "mp4_size": mp4.size,
                "json_offset": js.offset_data, "json_size": js.size, "source": meta["source"], "duration": meta["duration"],
                "has_audio": meta["has_audio"],
            })
        layout.shard_file(folder, shard, "json").write_text(json.dumps({"fingerprint": "test", "items": [{"item_id": m["item_id"], "status": "ok"} for m in metas.values()]}))
    pd.DataFrame(rows).to_parquet(Path(folder) / layout.FEATURE_INDEX, index=False)
    return Path(folder)


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        out, self.pos = self.data[self.pos : end], min(end, len(self.data))
        return out
