"""What a packed sample costs when its shard is read from object storage, at paper settings.

Generated 256p/10 fps sources (the texture and tone of benchmarks/stream.py, paper config's
packing) are packed by the real writer and uploaded to moto's S3 server on 127.0.0.1; a
:class:`~cmgh.data.stream.packed.PackedSource` with ``features.packed.remote`` then draws samples
(random window, decode, augmentation) for each block size, and counts per sample the ranged GETs,
the bytes they fetched and the bytes FFmpeg and the caption reader asked for. The cache is emptied
before every sample: in a corpus far larger than the cache (HowTo100M's ~23 TB against
``cache_mb`` per process), a shuffled sample almost never finds its blocks cached, so these are the
figures a run pays. Seconds per sample are printed too, but a local server has no network latency:
on a real store each request adds its round trip (tens of ms, hidden by loader workers).

Usage: .venv/bin/python benchmarks/remote_stream.py [--clips 2] [--seconds 300] [--samples 40] [--blocks 64,256,1024]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.stream import PAPER, packed, sources  # noqa: E402
from cmgh import config, layout  # noqa: E402
from cmgh.data.extract.text import Vocabulary  # noqa: E402
from cmgh.data.io import media  # noqa: E402
from cmgh.data.stream.packed import PackedSource  # noqa: E402
from cmgh.data.stream.remote import ENV_PREFIX, BlockCache, RemoteShards  # noqa: E402
from tests.s3_server import BUCKET, ENV_KEYS, moto_server, s3_client, upload_tree  # noqa: E402

PREFIX = "bench/features"


def measure(source: PackedSource, samples: int) -> dict[str, float]:
    """Per sample, from a cold cache: GETs, bytes fetched, bytes asked for, seconds."""
    shards = source.shards
    assert isinstance(shards, RemoteShards)
    requests = fetched = asked = 0
    seconds = 0.0
    for k in range(samples):
        shards.cache = BlockCache(shards.spec.cache_bytes)
        before = (shards.requests, shards.fetched, source.bytes_read)
        t0 = time.perf_counter()
        source.sample(k % len(source), np.random.default_rng(k))
        seconds += time.perf_counter() - t0
        requests += shards.requests - before[0]
        fetched += shards.fetched - before[1]
        asked += source.bytes_read - before[2]
    return {"requests": requests / samples, "fetched": fetched / samples, "asked": asked / samples, "seconds": seconds / samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=300.0, help="length of each source (HowTo100M's mean is ~6.5 min; packing keeps 600 s)")
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--blocks", default="64,256,1024", help="block_kb values to compare")
    args = parser.parse_args()
    cfg = config.load(PAPER)
    feats = cfg.to_dict()["features"]
    video, sr = feats["video"], int(feats["audio"]["sample_rate"])
    width = media.scaled_size(1280, 720, int(video["short_side"]))[0]
    work = Path(tempfile.mkdtemp(prefix="cmgh-bench-remote-"))
    t0 = time.perf_counter()
    folder = packed(sources(work, "p", video["short_side"], width, int(video["fps"]), args.seconds, args.clips, sr), "fastdecode")
    print(f"{args.clips} sources of {args.seconds:.0f} s generated and packed in {time.perf_counter() - t0:.0f} s", flush=True)
    vocab = Vocabulary.build(["stir the sauce slowly"], 64)
    index = pd.read_parquet(folder / layout.FEATURE_INDEX)
    local = PackedSource(folder, feats, vocab, dataset="howto100m")
    t0 = time.perf_counter()
    for k in range(args.samples):
        local.sample(k % len(local), np.random.default_rng(k))
    local_seconds = (time.perf_counter() - t0) / args.samples

    with moto_server(work / "moto.log") as endpoint:
        os.environ.update({**ENV_KEYS, f"{ENV_PREFIX}ENDPOINT_URL": endpoint})
        upload_tree(s3_client(endpoint), folder.parents[1], PREFIX)
        results = {}
        for kb in (int(b) for b in args.blocks.split(",")):
            remote = dict(feats)
            remote["packed"] = {**feats["packed"], "remote": {**feats["packed"]["remote"], "url": f"s3://{BUCKET}/{PREFIX}", "block_kb": kb}}
            results[kb] = measure(PackedSource(folder, remote, vocab, dataset="howto100m"), args.samples)

    window = video["frames"] / video["fps"]
    member = float(index["mp4_size"].mean())
    print(f"paper settings: {video['frames']} frames @ {video['fps']} fps ({window:.1f} s windows) from {args.seconds:.0f} s members of "
          f"{member / 1e6:.1f} MB (256p, {member * 8 / float(index['duration'].mean()) / 1e3:.0f} kbit/s); cold cache per sample; "
          f"moto on 127.0.0.1 (no network latency)")
    print(f"local shards: {local_seconds * 1e3:.0f} ms per sample")
    for kb, m in results.items():
        print(f"block_kb {kb:5d}: {m['requests']:.1f} GETs, {m['fetched'] / 1e3:7.0f} kB fetched ({m['fetched'] / m['asked']:.1f}x the "
              f"{m['asked'] / 1e3:.0f} kB read), {m['seconds'] * 1e3:.0f} ms per sample")
    default = int(feats["packed"]["remote"]["block_kb"])
    if default in results:
        m = results[default]
        print(f"per sample at the default block_kb {default}: {m['requests']:.1f} ranged GETs, {m['fetched'] / 1e3:.0f} kB fetched "
              f"(whole member {member / 1e6:.1f} MB: {member / m['fetched']:.0f}x less)")


if __name__ == "__main__":
    main()
