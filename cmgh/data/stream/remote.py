"""Packed shards read by byte range from object storage (any S3 API: AWS S3, MinIO, Ceph RGW).

With ``features.packed.remote.url`` set (the workflow sets it under an S3 storage provider), a
:class:`~cmgh.data.stream.packed.PackedSource` keeps its index local and reads each sample's
members from ``<url>/packed/<dataset>/shards/NNNNN.tar`` with ranged GETs: FFmpeg reads the mp4's
header and the window's packets through the same seekable member file as from a local shard, and
no shard is copied whole. Reads go through :class:`BlockCache`, a least-recently-used set of
aligned blocks (``block_kb``) bounded in bytes over all shards (``cache_mb`` per process): PyAV's
32 KiB reads hit it, and the missing blocks of one read are one request. (fsspec's block caches
bound blocks per file and fetch block by block, so neither bound nor request count would hold.)

Clients are made per process, lazily: a forked loader worker makes its own, like the local
descriptors. Endpoint and credentials come from the environment only, never from the config: the
storage plugin's ``SNAKEMAKE_STORAGE_S3_*`` variables where set, else boto3's own chain
(``AWS_ACCESS_KEY_ID``..., ``AWS_ENDPOINT_URL_S3``, ``~/.aws``). botocore retries a failed request
(its standard mode); a body cut short is fetched again here; what stays unreadable is a one-line
:class:`~cmgh.errors.DataError` naming the object's URL (masked). boto3 is imported only when a
remote corpus is read: training from local shards does not need it installed.
"""

from __future__ import annotations

import os
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cmgh import layout
from cmgh.errors import ConfigError, DataError
from cmgh.io import redacted

SCHEMES = ("s3",)
ENV_PREFIX = "SNAKEMAKE_STORAGE_S3_"  # snakemake-storage-plugin-s3's variables (what a remote executor hands its jobs)
ENV_SETTINGS = {"endpoint_url": "ENDPOINT_URL", "region_name": "REGION", "aws_access_key_id": "ACCESS_KEY",
                "aws_secret_access_key": "SECRET_KEY", "aws_session_token": "TOKEN"}
KEY = "features.packed.remote"


@dataclass(frozen=True)
class RemoteSpec:
    """Where a corpus's shards are read from and how (picklable, from ``features.packed.remote``)."""

    url: str  # the object-storage location of paths.features: s3://<bucket>/<prefix>
    cache_bytes: int
    block_bytes: int
    retries: int

    @classmethod
    def from_features(cls, features: Mapping[str, Any]) -> RemoteSpec | None:
        """The spec, or None when the shards are local (no ``url``)."""
        remote = features.get("packed", {}).get("remote") or {}
        url = remote.get("url")
        if not url:
            return None
        split_url(str(url))
        spec = cls(str(url).rstrip("/"), int(float(remote["cache_mb"]) * 2**20), int(remote["block_kb"]) * 1024, int(remote["retries"]))
        if spec.cache_bytes < 2 * spec.block_bytes:
            raise ConfigError(f"{KEY}.cache_mb: {remote.get('cache_mb')} holds fewer than two blocks of block_kb {remote.get('block_kb')}; raise it")
        return spec


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (bucket, ``some/prefix``); anything else is a config error."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"{KEY}.url: {redacted(url)!r} is not an object-storage location (expected s3://<bucket>/<prefix>)")
    return parts.netloc, parts.path.strip("/")


def make_client(retries: int) -> Any:
    """An S3 client for this process: endpoint and credentials from the environment (see the module's doc)."""
    import boto3
    from botocore.config import Config

    settings = {arg: os.environ.get(ENV_PREFIX + name) or None for arg, name in ENV_SETTINGS.items()}
    config = Config(retries={"total_max_attempts": retries + 1, "mode": "standard"}, connect_timeout=10, read_timeout=60,
                    request_checksum_calculation="when_required", response_checksum_validation="when_required")
    try:
        return boto3.session.Session().client("s3", config=config, **settings)
    except Exception as exc:  # botocore names the setting that is wrong, never a secret's value
        raise DataError(f"object storage: cannot make an S3 client ({_reason(exc)})") from None


def _errors() -> tuple[type[BaseException], ...]:
    """What a request or a body read raises when the store or the network fails (not a bug here)."""
    from botocore.exceptions import BotoCoreError, ClientError
    from urllib3.exceptions import HTTPError

    return BotoCoreError, ClientError, HTTPError, OSError


def _reason(exc: BaseException) -> str:
    return redacted(" ".join(str(exc).split()) or exc.__class__.__name__)[:200]


class BlockCache:
    """Blocks by key, least recently used dropped first, at most ``limit`` bytes together."""

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)
        self.size = 0
        self.blocks: OrderedDict[tuple[int, int], bytes] = OrderedDict()

    def get(self, key: tuple[int, int]) -> bytes | None:
        data = self.blocks.get(key)
        if data is not None:
            self.blocks.move_to_end(key)
        return data

    def put(self, key: tuple[int, int], data: bytes) -> None:
        if key in self.blocks:
            return
        self.blocks[key] = data
        self.size += len(data)
        while self.size > self.limit:
            _, old = self.blocks.popitem(last=False)
            self.size -= len(old)


class RemoteShards:
    """The tar shards of one packed corpus in a bucket. ``requests`` and ``fetched`` count the GETs
    and bytes this process asked of the store (the cache's hits cost neither)."""

    def __init__(self, spec: RemoteSpec, dataset: str) -> None:
        self.spec = spec
        self.url = f"{spec.url}/{layout.PACKED_DIR}/{dataset}/{layout.SHARDS_DIR}"
        self.bucket, self.prefix = split_url(self.url)
        self.cache = BlockCache(spec.cache_bytes)
        self.requests = self.fetched = 0
        self._sizes: dict[int, int] = {}
        self._client: Any = None
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"], state["cache"] = None, BlockCache(self.spec.cache_bytes)
        return state

    def client(self) -> Any:
        if self._client is None or self._pid != os.getpid():  # never a client inherited over fork
            self._client, self._pid = make_client(self.spec.retries), os.getpid()
        return self._client

    def name(self, shard: int) -> str:
        return redacted(f"{self.url}/{shard:05d}.tar")

    def _key(self, shard: int) -> str:
        return f"{self.prefix}/{shard:05d}.tar"

    def sizes(self, shards: Iterable[int]) -> dict[int, int]:
        """The size of each shard the bucket holds, listed a thousand a request (not a HEAD each)."""
        wanted, listed, client = set(shards), {}, self.client()
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/"):
                self.requests += 1
                for obj in page.get("Contents", []):
                    stem, _, suffix = obj["Key"].rpartition("/")[2].partition(".")
                    if suffix == "tar" and stem.isdigit() and int(stem) in wanted:
                        listed[int(stem)] = int(obj["Size"])
        except _errors() as exc:  # after botocore's retries
            raise DataError(f"{redacted(self.url)}/: cannot list the shards ({_reason(exc)})") from None
        self._sizes.update(listed)
        return listed

    def size(self, shard: int) -> int:
        if shard not in self._sizes and shard not in self.sizes([shard]):
            raise DataError(f"{self.name(shard)}: missing (no such object)")
        return self._sizes[shard]

    def pread(self, shard: int, n: int, pos: int) -> bytes:
        """Up to ``n`` bytes of ``shard`` at ``pos`` (``os.pread``'s contract), through the block cache."""
        size, block = self.size(shard), self.spec.block_bytes
        end = min(pos + n, size)
        if end <= pos:
            return b""
        first, last = pos // block, (end - 1) // block
        blocks = {b: self.cache.get((shard, b)) for b in range(first, last + 1)}
        missing = [b for b, data in blocks.items() if data is None]
        while missing:  # each run of consecutive missing blocks: one request
            run = 1
            while run < len(missing) and missing[run] == missing[0] + run:
                run += 1
            lo = missing[0] * block
            data = self._get(shard, lo, min(size, lo + run * block))
            for j, b in enumerate(missing[:run]):
                blocks[b] = data[j * block : (j + 1) * block]
                self.cache.put((shard, b), blocks[b])
            missing = missing[run:]
        views = [memoryview(blocks[b]) for b in range(first, last + 1)]  # slices, not copies, until the join
        views[-1] = views[-1][: end - last * block]
        views[0] = views[0][pos - first * block :]
        return b"".join(views)

    def _get(self, shard: int, lo: int, hi: int) -> bytes:
        """Bytes ``[lo, hi)`` of a shard in one GET; a body cut short is asked again ``retries`` times."""
        where = f"{self.name(shard)}: bytes {lo}-{hi - 1}"
        client, errors = self.client(), _errors()
        for attempt in range(self.spec.retries + 1):
            try:
                response = client.get_object(Bucket=self.bucket, Key=self._key(shard), Range=f"bytes={lo}-{hi - 1}")
            except errors as exc:  # botocore retried what it deems transient
                code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
                state = "missing" if code in ("NoSuchKey", "NoSuchBucket", "404") else "truncated" if code in ("InvalidRange", "416") else "unreadable"
                raise DataError(f"{where}: {state} ({_reason(exc)})") from None
            self.requests += 1
            try:
                data = response["Body"].read()
            except errors as exc:  # the connection dropped mid-body
                if attempt == self.spec.retries:
                    raise DataError(f"{where}: unreadable after {attempt + 1} tries ({_reason(exc)})") from None
                time.sleep(min(2.0, 0.1 * 2**attempt))
                continue
            self.fetched += len(data)
            if len(data) == hi - lo:
                return data
            if attempt == self.spec.retries:
                raise DataError(f"{where}: truncated: {len(data)} bytes came back after {attempt + 1} tries")
        raise AssertionError("unreachable")
