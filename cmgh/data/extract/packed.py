"""Pack a pre-training corpus into WebDataset tar shards of re-encoded clips (``features.format: packed``).

Layout of ``<features>/packed/<dataset>/`` (:func:`cmgh.layout.packed_dir`)::

    shards/00000.tar    per ok sample <key>.mp4 (H.264 at features.video.short_side/fps + AAC mono)
                        then <key>.json (ids, source, duration, fps, sample_rate, has_audio, captions, labels)
    shards/00000.json   fingerprint + per-item status and its members' CRC-32 (written last: marks the shard done)
    index.parquet       one row per ok sample, with the byte offsets of both members in their tar
    manifest.csv        one row per source item: item_id, source, status
    config.yaml         the resolved config

Each sample covers its whole source up to ``features.packed.max_seconds``, so the loader draws a
new window every epoch; the mp4's index comes first (``+faststart``), so a loader reading the
member as a byte range reads its header and its window only. Decoding one window of a 256p/10 fps
clip costs a fraction of decoding the 720p source, and a 3.2 s window takes ~40x fewer bytes
than the decoded arrays of a clip.
Shards are resumable exactly like the decoded ones (:mod:`cmgh.data.extract.shards`); a finished shard
whose tar no longer matches its JSON (a member's bytes included, by their CRC-32, with
``features.packed.verify: checksums``) is packed again, and a missing or corrupt source is recorded
in the manifest and skipped.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cmgh import layout
from cmgh.config import Config
from cmgh.data import datasets
from cmgh.data.datasets.packing import PackItem
from cmgh.data.io import encode, media
from cmgh.data.extract import shards
from cmgh.errors import DataError
from cmgh.io import atomic_path, atomic_write_json, sweep_debris

log = logging.getLogger(__name__)

__all__ = ["PackSpec", "pack", "pack_items", "verify_shard"]

NO_VIDEO = "skipped: no video stream"  # an audio-only clip (AudioSet's may be) is no video-audio pair
_MP4, _JSON = layout.PACKED_MEMBERS
# x264 tune of the packed video: at 256p/10 fps fastdecode (no CABAC, deblocking or weighted
# prediction) halves the loader's decode time for ~10% more bytes (benchmarks/stream.py).
TUNE = "fastdecode"
CHECKSUM_FIELDS = {_MP4: "mp4_crc32", _JSON: "json_crc32"}  # in each ok item's record of the shard JSON
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PackSpec:
    """Everything a worker needs to pack one source (picklable, no config object)."""

    dataset: str
    fps: float
    short_side: int
    sample_rate: int
    max_seconds: float
    crf: int
    gop: int  # frames between keyframes
    audio_kbps: int
    tune: str | None = TUNE


@dataclass
class Packed:
    item_id: str
    status: str
    mp4: bytes | None = None
    json: bytes | None = None
    info: dict[str, Any] = field(default_factory=dict)


def pack_spec(cfg: Config, dataset: str, tune: str | None = TUNE) -> PackSpec:
    f = cfg.features
    fps = float(f.video.fps)
    return PackSpec(
        dataset=dataset,
        fps=fps,
        short_side=int(f.video.short_side),
        sample_rate=int(f.audio.sample_rate),
        max_seconds=float(f.packed.max_seconds),
        crf=int(f.packed.crf),
        gop=max(1, round(float(f.packed.keyframe_seconds) * fps)),
        audio_kbps=int(f.packed.audio_kbps),
        tune=tune,
    )


def pack_items(dataset: str, root: Path) -> list[PackItem]:
    """The sources of a pre-training corpus (its ``SPEC.packing``), their member keys checked unique.
    Items that cannot be packed carry their status (:func:`unpackable`)."""
    packing = datasets.get(dataset).packing
    if packing is None:
        corpora = [spec.name for spec in datasets.specs() if spec.packing is not None]
        raise DataError(f"dataset {dataset!r} is not a pre-training corpus (expected one of {', '.join(corpora)})")
    planned = packing.items(root)
    seen: dict[str, str] = {}
    for it in planned:
        if it.status is not None:  # never a member of a tar
            continue
        if it.key in seen:
            raise DataError(f"{root}: items {seen[it.key]!r} and {it.item_id!r} share the shard member key {it.key!r}; expected unique ids")
        seen[it.key] = it.item_id
    return planned


def fingerprint(spec: PackSpec, group: Sequence[PackItem]) -> str:
    """A shard's inputs: settings + items (ids, relative sources, captions, labels)."""
    return shards.fingerprint(spec, [(it.item_id, it.relpath, it.captions, it.labels, *([it.status] if it.status else [])) for it in group])


def pack_item(item: PackItem, spec: PackSpec) -> Packed:
    """Re-encode one source in memory; media errors become a manifest status instead of an exception."""
    if item.status is not None:
        return Packed(item.item_id, item.status)
    buffer = io.BytesIO()
    try:
        info = encode.transcode(
            item.source, buffer, spec.fps, spec.short_side, spec.sample_rate,
            max_seconds=spec.max_seconds, crf=spec.crf, gop=spec.gop, audio_kbps=spec.audio_kbps, tune=spec.tune,
        )
    except DataError as exc:
        status = media.manifest_status(item.source, exc)
        if status == "corrupt: no video stream" and datasets.get(spec.dataset).audio_only:
            return Packed(item.item_id, NO_VIDEO)
        return Packed(item.item_id, status)
    duration = float(info["duration"])
    sample = {
        "key": item.key,
        "item_id": item.item_id,
        "dataset": spec.dataset,
        "source_id": item.source_id,
        "source": item.relpath,
        "duration": duration,
        "fps": spec.fps,
        "sample_rate": spec.sample_rate,
        "has_audio": bool(info["has_audio"]),
        "captions": [{"start": s, "end": e, "text": t} for s, e, t in item.captions if s < duration],
        "labels": list(item.labels),
    }
    payload = json.dumps(sample, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Packed(item.item_id, shards.OK, buffer.getvalue(), payload, {"duration": duration, "has_audio": sample["has_audio"]})


def _pack_star(args: tuple[PackItem, PackSpec]) -> Packed:
    return pack_item(*args)


def _member(name: str, size: int) -> tarfile.TarInfo:
    """Deterministic member metadata: same samples in, same tar bytes out."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = size, 0, 0o644, 0, 0, "", ""
    return info


def _write_shard(out: Path, k: int, group: Sequence[PackItem], results: Iterator[Packed], fp: str) -> None:
    """Stream the samples into the tar as they arrive (temp file, then rename), then the shard JSON."""
    records = []
    with atomic_path(layout.shard_file(out, k, "tar")) as tmp:
        with open(tmp, "wb") as fh:
            with tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for item, packed in zip(group, results, strict=True):
                    record: dict[str, Any] = {"item_id": item.item_id, "status": packed.status}
                    if packed.mp4 is not None and packed.json is not None:
                        for suffix, data in ((_MP4, packed.mp4), (_JSON, packed.json)):
                            tar.addfile(_member(f"{item.key}.{suffix}", len(data)), io.BytesIO(data))
                            record[CHECKSUM_FIELDS[suffix]] = zlib.crc32(data)
                        record.update(key=item.key, **packed.info)
                    records.append(record)
            fh.flush()
            os.fsync(fh.fileno())
    atomic_write_json(layout.shard_file(out, k, "json"), {"fingerprint": fp, "items": records})


def _crc32(fh: Any, offset: int, size: int) -> int:
    fh.seek(offset)
    crc, left = 0, size
    while left > 0:
        chunk = fh.read(min(_CHUNK, left))
        if not chunk:
            raise ValueError("the file ends inside a member")
        crc, left = zlib.crc32(chunk, crc), left - len(chunk)
    return crc


def verify_shard(out: Path, k: int, group: Sequence[PackItem], fp: str, checksums: bool = True) -> list[dict[str, Any]] | None:
    """The shard's index rows if it is finished and intact, else None (to be packed again).

    Always: the shard JSON, the tar read to its end member header by member header (names in the
    contract's order, sizes within the file; ~70 ms for a GB of 1 MB samples from the page cache,
    measured, plus a seek per member from a cold disk) and each JSON member parsed. With
    ``checksums`` every member's bytes are read and compared with the CRC-32 recorded when it was
    packed, so a member damaged in place (same size, other bytes: bit rot, a bad copy) is caught
    here instead of being substituted sample by sample in training: the cost of reading the
    corpus once (disk bandwidth; zlib's CRC-32 ran at 2.1 GB/s on one core here). No mp4 is decoded.
    """
    tar_path = layout.shard_file(out, k, "tar")

    def check(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if [r["item_id"] for r in records] != [it.item_id for it in group]:
            raise ValueError("items differ from the plan")
        size = tar_path.stat().st_size
        with open(tar_path, "rb") as fh, tarfile.open(fileobj=fh, mode="r:") as tar:
            members = tar.getmembers()
            ok = [(it, r) for it, r in zip(group, records, strict=True) if r["status"] == shards.OK]
            expected = [f"{it.key}.{suffix}" for it, _ in ok for suffix in layout.PACKED_MEMBERS]
            if [m.name for m in members] != expected:
                raise ValueError(f"{tar_path}: members differ from the shard JSON")
            if any(not m.isfile() or m.size <= 0 or m.offset_data + m.size > size for m in members):
                raise ValueError(f"{tar_path}: a member runs past the end of the file")
            rows = []
            for (item, record), mp4, js in zip(ok, members[0::2], members[1::2], strict=True):
                if checksums:
                    for suffix, member in ((_MP4, mp4), (_JSON, js)):
                        recorded = record.get(CHECKSUM_FIELDS[suffix])
                        if recorded is None:
                            raise ValueError(f"{tar_path}: packed before member checksums (features.packed.verify: headers skips this check)")
                        if _crc32(fh, member.offset_data, member.size) != recorded:
                            raise ValueError(f"{tar_path}: {member.name}: its bytes differ from those packed (CRC-32)")
                fh.seek(js.offset_data)
                sample = json.loads(fh.read(js.size))
                if sample["key"] != item.key or sample["item_id"] != item.item_id:
                    raise ValueError(f"{tar_path}: {js.name} describes another sample")
                rows.append({
                    "item_id": item.item_id, "key": item.key, "shard": k,
                    "mp4_offset": mp4.offset_data, "mp4_size": mp4.size, "json_offset": js.offset_data, "json_size": js.size,
                    "source": item.relpath, "duration": float(sample["duration"]), "has_audio": bool(sample["has_audio"]),
                    **item.meta,
                })
        return rows

    return shards.finished(layout.shard_file(out, k, "json"), fp, check, "packing")


def pack(cfg: Config, dataset: str, workers: int | None = None, tune: str | None = TUNE) -> Path:
    """Pack ``dataset`` (a pre-training corpus: its spec has ``packing``) into tar shards; returns the index path.

    Re-running skips every finished, intact shard. ``tune``: x264's tune (the benchmark compares).
    """
    root = datasets.dataset_root(cfg, dataset)
    out = layout.packed_dir(cfg.path("features"), dataset)
    shard_dir = out / layout.SHARDS_DIR
    shard_dir.mkdir(parents=True, exist_ok=True)
    debris = sweep_debris(shard_dir)
    if debris:
        log.info("%s: removed %d partial files a killed run left (%s)", shard_dir, len(debris), debris[0].name)
    spec = pack_spec(cfg, dataset, tune)
    planned = pack_items(dataset, root)
    if not planned:
        raise DataError(f"{root}: no items found to pack for dataset {dataset!r}")
    groups = shards.split(planned, int(cfg.features.shard_size))
    prints = [fingerprint(spec, g) for g in groups]
    checksums = cfg.features.packed.verify == "checksums"
    verified = {k: verify_shard(out, k, g, prints[k], checksums) for k, g in enumerate(groups)}
    pending = [k for k, rows in verified.items() if rows is None]
    todo = [(it, spec) for k in pending for it in groups[k]]
    log.info("%s: %d sources in %d shards, %d to pack", dataset, len(planned), len(groups), len(todo))

    n_workers = int(cfg.features.workers if workers is None else workers)
    stream = shards.ordered_map(_pack_star, todo, n_workers, in_flight=n_workers + 1)
    shards.run(groups, pending, stream, lambda k, results: _write_shard(out, k, groups[k], results, prints[k]), f"pack {dataset}")
    shards.remove_stale(shard_dir, len(groups))

    index_rows = []
    for k in range(len(groups)):
        rows = verified[k] if verified[k] is not None else verify_shard(out, k, groups[k], prints[k], checksums)
        if rows is None:
            layout.shard_file(out, k, "json").unlink(missing_ok=True)
            raise DataError(f"{layout.shard_file(out, k, 'tar')}: damaged right after packing; run the extraction again")
        index_rows.extend(rows)
    index = pd.DataFrame(index_rows, columns=[*layout.PACKED_INDEX_COLUMNS, *datasets.get(dataset).packing.columns])
    return shards.write_tables(cfg, out, dataset, index, _manifest_rows(out, groups, datasets.get(dataset).captioned))


def _manifest_rows(out: Path, groups: Sequence[Sequence[PackItem]], captioned: bool) -> Iterator[dict[str, Any]]:
    """Every item's status (``ok: no audio stream`` for a source without audio, ``ok: no captions``
    for a captioned corpus's video without captions)."""
    for k, group in enumerate(groups):
        records = json.loads(layout.shard_file(out, k, "json").read_text())["items"]
        for it, r in zip(group, records, strict=True):
            yield {"item_id": it.item_id, "source": it.relpath, "status": shards.manifest_status(r["status"], captioned and not it.captions, r.get("has_audio", True))}
