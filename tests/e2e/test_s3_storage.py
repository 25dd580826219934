"""Object storage: a slice of the tiny DAG run through a real S3 API (moto's server on 127.0.0.1)
with workflow/profiles/s3, as a cluster without a shared file system runs it."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pandas as pd
import pytest
import yaml

from cmgh.config import apply_overrides
from tests.helpers import tiny_overrides
from tests.e2e.dag import REPO, TINY_RUNS, snakemake
from tests.helpers import free_port

pytestmark = pytest.mark.slow

BUCKET = "cmgh-test"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
# Kinetics' features (synth + extract: clips in, shards out) and the vocabulary (two annotation files in).
TARGETS = ["out/features/vocab.json", "out/features/kinetics"]


@pytest.fixture
def s3_endpoint(tmp_path: Path) -> Iterator[str]:
    """A moto S3 server in its own process, with an empty bucket."""
    port = free_port()
    log = (tmp_path / "moto.log").open("w")
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client("s3", endpoint_url=url, **CREDENTIALS)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:
                assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "moto.log").read_text()
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def objects(client, prefix: str = "cmgh/") -> dict[str, int]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


def test_features_move_through_an_s3_bucket(tmp_path: Path, s3_endpoint: str) -> None:
    # Relative paths: keys under the prefix, relative to the working directory (the profile's rule).
    tree = apply_overrides({}, [*tiny_overrides(Path("out")), *TINY_RUNS])
    tree["variants"] = {"baseline": {}}
    configfile = tmp_path / "tiny.yaml"
    configfile.write_text(yaml.safe_dump(tree))
    storage = ["--profile", str(REPO / "workflow" / "profiles" / "s3"), "--configfile", str(configfile),
               "--default-storage-prefix", f"s3://{BUCKET}/cmgh", "--storage-s3-endpoint-url", s3_endpoint,
               "--storage-s3-access-key", "testing", "--storage-s3-secret-key", "testing"]

    run = snakemake(tmp_path, *TARGETS, *storage)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]

    client = boto3.client("s3", endpoint_url=s3_endpoint, **CREDENTIALS)
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
