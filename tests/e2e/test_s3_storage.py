"""Object storage: a slice of the tiny DAG run through a real S3 API (moto's server on 127.0.0.1)
with workflow/profiles/s3, as a cluster without a shared file system runs it."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cmgh import layout
from cmgh.config import apply_overrides
from tests.helpers import tiny_overrides
from tests.e2e.dag import REPO, TINY_RUNS, snakemake
from tests.s3_server import BUCKET, moto_server, objects, s3_client

pytestmark = pytest.mark.slow

# Kinetics' features (synth + extract: clips in, shards out) and the vocabulary (two annotation files in).
TARGETS = ["out/features/vocab.json", "out/features/kinetics"]


@pytest.fixture
def s3_endpoint(tmp_path: Path) -> Iterator[str]:
    """A moto S3 server in its own process, with an empty bucket."""
    with moto_server(tmp_path / "moto.log") as url:
        yield url


def storage_args(configfile: Path, endpoint: str) -> list[str]:
    return ["--profile", str(REPO / "workflow" / "profiles" / "s3"), "--configfile", str(configfile),
            "--default-storage-prefix", f"s3://{BUCKET}/cmgh", "--storage-s3-endpoint-url", endpoint,
            "--storage-s3-access-key", "testing", "--storage-s3-secret-key", "testing"]


def test_features_move_through_an_s3_bucket(tmp_path: Path, s3_endpoint: str) -> None:
    # Relative paths: keys under the prefix, relative to the working directory (the profile's rule).
    tree = apply_overrides({}, [*tiny_overrides(Path("out")), *TINY_RUNS])
    tree["variants"] = {"baseline": {}}
    configfile = tmp_path / "tiny.yaml"
    configfile.write_text(yaml.safe_dump(tree))
    storage = storage_args(configfile, s3_endpoint)

    run = snakemake(tmp_path, *TARGETS, *storage)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]

    client = s3_client(s3_endpoint)
    stored = objects(client)
    kinetics = tree["data"]["synth"]["kinetics"]
    items = kinetics["classes"] * (kinetics["train_per_class"] + kinetics["val_per_class"] + kinetics["test_per_class"])
    clips = [k for k in stored if k.startswith("cmgh/out/data/kinetics/") and k.endswith(".mp4")]
    assert len(clips) == items and all(stored[k] > 1000 for k in clips)
    for key in ("cmgh/out/features/vocab.json", "cmgh/out/data/howto100m/caption.json", "cmgh/out/features/kinetics/manifest.csv",
                "cmgh/out/results/logs/extract/kinetics.log"):
        assert stored.get(key, 0) > 0, key
    body = client.get_object(Bucket=BUCKET, Key="cmgh/out/features/kinetics/index.parquet")["Body"].read()
    assert len(pd.read_parquet(io.BytesIO(body))) == items
    shards = [k for k in stored if k.startswith("cmgh/out/features/kinetics/shards/") and k.endswith(".video.npy")]
    assert len(shards) == -(-items // tree["features"]["shard_size"])
    # Nothing was written beside the workflow as a plain file: the bucket holds the outputs.
    assert not (tmp_path / "out" / "data").exists() and not (tmp_path / "out" / "features").exists()

    again = snakemake(tmp_path, *TARGETS, *storage, "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, (again.stdout + again.stderr)[-3000:]
    # The bucket is what Snakemake checks: an object removed there is planned again.
    client.delete_object(Bucket=BUCKET, Key="cmgh/out/features/vocab.json")
    replan = snakemake(tmp_path, *TARGETS, *storage, "-n")
    assert replan.returncode == 0, (replan.stdout + replan.stderr)[-3000:]
    assert "vocab" in replan.stdout and "Nothing to be done" not in replan.stdout + replan.stderr


def test_pretraining_reads_its_packed_shards_from_the_bucket(tmp_path: Path, s3_endpoint: str) -> None:
    # HowTo100M packed into the bucket, then one pre-training run: its job fetches the index and the
    # manifest (small), never the shards, which it reads by byte range (cmgh.data.stream.remote).
    tree = apply_overrides({}, [*tiny_overrides(Path("out")), *TINY_RUNS, "features.format=packed", "sweep.run=false"])
    tree["variants"] = {"baseline": {}}
    configfile = tmp_path / "tiny.yaml"
    configfile.write_text(yaml.safe_dump(tree))
    summary = "out/results/pretrain/ms/baseline/seed0/" + layout.SUMMARY
    storage = storage_args(configfile, s3_endpoint)
    packed = f"s3://{BUCKET}/cmgh/out/features/packed/howto100m"

    plan = snakemake(tmp_path, summary, *storage, "-n")
    assert plan.returncode == 0, (plan.stdout + plan.stderr)[-3000:]
    jobs = {block.split(":", 1)[0]: block for block in (plan.stdout + plan.stderr).split("\nrule ")[1:]}
    (inputs,) = [line for line in jobs["pretrain"].splitlines() if line.strip().startswith("input:")]
    assert f"{packed}/index.parquet (retrieve" in inputs and f"{packed}/manifest.csv (retrieve" in inputs and "shards" not in inputs
    assert f"{packed}/shards (send to storage)" in jobs["pack"]
    resolved = yaml.safe_load((tmp_path / "out" / "results" / "config" / "resolved.yaml").read_text())
    assert resolved["features"]["packed"]["remote"]["url"] == f"s3://{BUCKET}/cmgh/out/features"
    assert "testing" not in (tmp_path / "out" / "results" / "config" / "resolved.yaml").read_text()  # no credential in the job's config

    run = snakemake(tmp_path, summary, *storage)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    client = s3_client(s3_endpoint)
    stored = objects(client)
    shards = [k for k in stored if k.startswith("cmgh/out/features/packed/howto100m/shards/") and k.endswith(".tar")]
    assert shards and f"cmgh/{summary}" in stored
    log = client.get_object(Bucket=BUCKET, Key="cmgh/out/results/logs/pretrain/ms/baseline/seed0.log")["Body"].read().decode()
    assert f"howto100m: shards read by byte range from {packed}/shards/" in log
    retrieved = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Retrieving from storage")]
    assert not [line for line in retrieved if "/shards" in line]
