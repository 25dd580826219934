"""Packed shards read by byte range from a real S3 API (moto's server on 127.0.0.1): the ranged reader
against the bytes, the same samples as from local shards (loader workers included), the cache bound,
one-line errors naming the object, and a pre-training run from the bucket equal to the local one."""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from cmgh import config as config_mod, layout
from cmgh.data.extract.text import Vocabulary
from cmgh.data.stream.packed import MemberFile, PackedSource
from cmgh.data.stream.pretrain import PretrainStream
from cmgh.data.stream.remote import ENV_PREFIX, RemoteShards, RemoteSpec
from cmgh.errors import ConfigError, DataError
from tests.data.corpus_trees import Clip, pack_tree, write_howto100m
from tests.data.stream.test_stream import FPS, SETTINGS, SR, features, ramp_frames, run, tone
from tests.helpers import free_port
from tests.s3_server import BUCKET, ENV_KEYS, moto_server, s3_client, upload_tree

PREFIX = "cmgh/out/features"
URL = f"s3://{BUCKET}/{PREFIX}"
SECRET = "s3cr3t-never-printed"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server's endpoint; the job's variables point this process (and its forked workers) at it."""
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint, pytest.MonkeyPatch.context() as env:
        for name, value in {**ENV_KEYS, "SNAKEMAKE_STORAGE_S3_SECRET_KEY": SECRET, f"{ENV_PREFIX}ENDPOINT_URL": endpoint}.items():
            env.setenv(name, value)  # moto accepts any secret; it must never show in a message
        yield endpoint


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, s3: str) -> tuple[Path, Vocabulary]:
    """Seven short clips and one of a minute (noise: every frame costs bytes) packed in shards of
    four, uploaded under the prefix; returns the local packed folder (shards and all)."""
    base = tmp_path_factory.mktemp("remote")
    rng = np.random.default_rng(0)
    words = [f"word{i}" for i in range(30)]
    captions = {f"vid{v}": [(float(s), s + 0.5, " ".join(rng.choice(words, 3))) for s in np.arange(0.0, 3.0, 0.5)] for v in range(7)}
    clips = {vid: Clip(ramp_frames(v), FPS, tone(), SR) for v, vid in enumerate(captions)}
    clips["long"] = Clip(rng.integers(0, 256, (60 * FPS, 32, 48, 3), dtype=np.uint8), FPS, tone(60.0), SR)
    write_howto100m(base / "data" / "howto100m", clips, {**captions, "long": [(10.0, 12.0, "word1 word2")]})
    folder = pack_tree(base, "howto100m", SETTINGS)
    upload_tree(s3_client(s3), base / "features", PREFIX)
    return folder, Vocabulary.build([c[2] for cs in captions.values() for c in cs], 64)


def remote_features(**remote: object) -> dict:
    out = features()
    out["packed"]["remote"].update({"url": URL, **remote})
    return out


def index_only(folder: Path, dest: Path) -> Path:
    """A packed folder with its index alone: what a job under the s3 profile has on its disk."""
    dest.mkdir(parents=True)
    shutil.copy(folder / layout.FEATURE_INDEX, dest / layout.FEATURE_INDEX)
    return dest


def test_ranged_reads_return_the_bytes_and_keep_the_cache_in_its_bound(corpus, s3: str) -> None:
    folder, _ = corpus
    local = layout.shard_file(folder, 1, "tar").read_bytes()  # the long clip's
    spec = RemoteSpec.from_features(remote_features(cache_mb=64 / 1024, block_kb=16))
    assert spec is not None and spec.cache_bytes == 4 * spec.block_bytes and len(local) > 4 * spec.cache_bytes
    shards = RemoteShards(spec, "howto100m")
    assert shards.sizes([0, 1, 99]) == {0: layout.shard_file(folder, 0, "tar").stat().st_size, 1: len(local)}
    member = MemberFile(functools.partial(shards.pread, 1), 1000, len(local) - 3000)
    rng = np.random.default_rng(0)
    for _ in range(40):
        pos, n = int(rng.integers(0, member.size + 10)), int(rng.integers(1, 40_000))
        member.seek(pos)
        assert member.read(n) == local[1000 + pos : 1000 + min(pos + n, member.size)]
        assert shards.cache.size <= spec.cache_bytes
    member.seek(-10, os.SEEK_END)
    buffer = bytearray(32)
    assert member.readinto(buffer) == 10 and bytes(buffer[:10]) == local[len(local) - 2010 : len(local) - 2000]
    before = shards.requests
    member.seek(5)
    member.read(100)
    member.seek(5)
    member.read(100)
    assert shards.requests - before <= 1  # the second read hits the cache
    before, start = shards.requests, 3 * spec.block_bytes + 7
    shards.cache.blocks.clear()
    shards.cache.size = 0
    assert shards.pread(1, 3 * spec.block_bytes, start) == local[start : start + 3 * spec.block_bytes]
    assert shards.requests - before == 1  # four missing blocks in a row: one ranged GET


def test_bucket_samples_equal_the_local_ones_with_no_shard_on_disk(corpus, tmp_path: Path) -> None:
    folder, vocab = corpus
    remote_folder = index_only(folder, tmp_path / "packed" / "howto100m")
    local = PackedSource(folder, features(), vocab)
    remote = PackedSource(remote_folder, remote_features(cache_mb=1, block_kb=64), vocab)
    for i in range(len(local)):
        a, b = local.sample(i, np.random.default_rng(i)), remote.sample(i, np.random.default_rng(i))
        assert a.keys() == b.keys() and a["item_id"] == b["item_id"]
        for key, value in a.items():
            assert torch.equal(value, b[key]) if isinstance(value, torch.Tensor) else value == b[key], key
    shard_bytes = sum(p.stat().st_size for p in (folder / layout.SHARDS_DIR).glob("*.tar"))
    stats = remote.shards
    assert isinstance(stats, RemoteShards) and stats.cache.size <= 2**20 and stats.fetched < shard_bytes
    # The long clip from a cold cache: its header and about the window's blocks, not its minute.
    cold = PackedSource(remote_folder, remote_features(cache_mb=0.25, block_kb=16), vocab)
    long = int(np.flatnonzero(cold.index["item_id"] == "long")[0])
    before = cold.shards.requests  # the listing
    cold.sample(long, np.random.default_rng(7))
    assert isinstance(cold.shards, RemoteShards) and 0 < cold.shards.fetched < int(cold.index.at[long, "mp4_size"]) / 2
    assert 2 <= cold.shards.requests - before <= 8
    assert sorted(p.name for p in remote_folder.iterdir()) == [layout.FEATURE_INDEX]


def test_loader_workers_stream_from_the_bucket_as_from_disk(corpus, tmp_path: Path) -> None:
    folder, vocab = corpus

    def stream(source: PackedSource) -> PretrainStream:
        return PretrainStream([("howto100m", 1.0, source)], 4, seed=3, stop=4)

    local = run(stream(PackedSource(folder, features(), vocab)))
    remote = run(stream(PackedSource(index_only(folder, tmp_path / "packed" / "howto100m"), remote_features(), vocab)), workers=2)
    assert [b["item_id"] for b in local] == [b["item_id"] for b in remote]
    assert all(torch.equal(a["video"], b["video"]) and torch.equal(a["audio"], b["audio"]) for a, b in zip(local, remote, strict=True))


def test_a_missing_object_or_an_unreachable_store_is_one_line_naming_the_url(corpus, s3: str, tmp_path: Path, caplog) -> None:
    folder, vocab = corpus
    dest = tmp_path / "packed" / "howto100m"
    shard = f"{URL}/packed/howto100m/shards/00001.tar"
    source = PackedSource(index_only(folder, dest), remote_features(), vocab)
    client = s3_client(s3)
    body = client.get_object(Bucket=BUCKET, Key=f"{PREFIX}/packed/howto100m/shards/00001.tar")["Body"].read()
    client.delete_object(Bucket=BUCKET, Key=f"{PREFIX}/packed/howto100m/shards/00001.tar")
    try:
        row = int(np.flatnonzero(source.index["shard"] == 1)[0])
        with pytest.raises(DataError) as drawn:
            source.sample(row, np.random.default_rng(0))
        with pytest.raises(DataError) as opened:
            PackedSource(dest, remote_features(), vocab)
    finally:
        client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/packed/howto100m/shards/00001.tar", Body=body)
    assert str(drawn.value).startswith(f"{shard}: bytes ") and "missing" in str(drawn.value)
    assert str(opened.value).startswith(f"{shard}: missing")
    with pytest.MonkeyPatch.context() as env:  # nothing listens there: refused at once, retried, then named
        env.setenv(f"{ENV_PREFIX}ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
        with pytest.raises(DataError) as unreachable:
            PackedSource(dest, remote_features(retries=1), vocab)
    assert str(unreachable.value).startswith(f"{URL}/packed/howto100m/shards/: cannot list the shards (")
    for error in (drawn, opened, unreachable):
        assert "\n" not in str(error.value) and SECRET not in str(error.value)
    assert SECRET not in caplog.text


def test_a_body_cut_short_is_fetched_again_up_to_the_retries(corpus) -> None:
    from botocore.exceptions import ResponseStreamingError

    folder, _ = corpus
    local = layout.shard_file(folder, 0, "tar").read_bytes()

    def flaky(failures: int, retries: int) -> RemoteShards:
        """Shards whose first ``failures`` GET bodies break off mid-read (the store's real responses otherwise)."""
        shards = RemoteShards(RemoteSpec.from_features(remote_features(retries=retries, block_kb=16)), "howto100m")
        store, left = shards.client(), [failures]

        class Body:
            def __init__(self, body) -> None:
                self.body = body

            def read(self) -> bytes:
                if left[0] > 0:
                    left[0] -= 1
                    self.body.close()
                    raise ResponseStreamingError(error="Connection broken: IncompleteRead(100 bytes read, 16284 more expected)")
                return self.body.read()

        class Client:
            def get_object(self, **kwargs):
                response = store.get_object(**kwargs)
                return {**response, "Body": Body(response["Body"])}

            def __getattr__(self, name: str):
                return getattr(store, name)

        shards._client = Client()
        return shards

    shards = flaky(failures=2, retries=2)
    assert shards.pread(0, 100, 10) == local[10:110]
    assert shards.requests == 1 + 3  # the listing, then two broken GETs and a whole one
    with pytest.raises(DataError, match=r"00000\.tar: bytes 0-16383: unreadable after 2 tries \(An error occurred while reading"):
        flaky(failures=2, retries=1).pread(0, 100, 10)


def test_remote_settings_are_checked_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"features\.packed\.remote\.url: .*expected form"):
        config_mod.load(overrides=["features.packed.remote.url=https://example.org/bucket"])
    with pytest.raises(ConfigError, match=r"features\.packed\.remote\.cache_mb: .* fewer than two blocks"):
        RemoteSpec.from_features(remote_features(cache_mb=0.25, block_kb=256))
    assert RemoteSpec.from_features(features()) is None  # no url: local shards


def test_pretraining_from_the_bucket_ends_with_the_local_parameters(corpus, tmp_path: Path) -> None:
    from cmgh.train.loop import RunSpec, pretrain
    from tests.train.tiny_runs import assert_same_state, small, state_of

    folder, vocab = corpus
    local_features = folder.parents[1]
    vocab.save(local_features / layout.VOCAB)
    bucket_features = tmp_path / "features"
    index_only(folder, layout.packed_dir(bucket_features, "howto100m"))
    shutil.copy(local_features / layout.VOCAB, bucket_features / layout.VOCAB)
    base = config_mod.load(overrides=[*SETTINGS, f"paths.features={local_features}", f"paths.data={tmp_path / 'data'}",
                                      f"paths.results={tmp_path / 'results'}", "features.format=packed"])
    cfg = small(base, "pretrain.steps=3", "pretrain.batch_size=4", "pretrain.num_workers=2")
    local = pretrain(cfg, RunSpec("ms", "gr_gcl", 0, tmp_path / "local"))
    remote_cfg = config_mod.with_overrides(cfg, [f"paths.features={bucket_features}", f"features.packed.remote.url={URL}", "features.packed.remote.cache_mb=1"])
    remote = pretrain(remote_cfg, RunSpec("ms", "gr_gcl", 0, tmp_path / "remote"))
    assert_same_state(state_of(local), state_of(remote))
    on_disk = [p for p in bucket_features.rglob("*") if p.is_file()]
    assert sorted(p.name for p in on_disk) == [layout.FEATURE_INDEX, layout.VOCAB]  # no shard, whole or in part


def test_where_the_shards_are_read_from_changes_no_identity_and_no_trigger() -> None:
    from cmgh import identity
    from cmgh.plan import Plan
    from cmgh.plan.triggers import Triggers

    here = config_mod.load(overrides=["features.format=packed"])
    bucket = config_mod.with_overrides(here, [f"features.packed.remote.url={URL}", "features.packed.remote.cache_mb=8"])
    assert all(identity.run_identity(here, stage) == identity.run_identity(bucket, stage) for stage in identity.RUN_STAGES)
    a, b = Triggers(Plan(here)), Triggers(Plan(bucket))
    variant = next(iter(here.variants))
    assert a.evaluate_random_init() == b.evaluate_random_init() and a.pretrain(variant) == b.pretrain(variant)
