"""A real S3 API on 127.0.0.1 for the object-storage tests: moto's server in its own process (the
stream's reader, the s3 profile's DAG). Plain helpers; each test module makes its own fixture."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3

from tests.helpers import free_port

BUCKET = "cmgh-test"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
# The same credentials as the variables a job reads (snakemake-storage-plugin-s3's, cmgh.data.stream.remote's).
ENV_KEYS = {"SNAKEMAKE_STORAGE_S3_ACCESS_KEY": "testing", "SNAKEMAKE_STORAGE_S3_SECRET_KEY": "testing", "SNAKEMAKE_STORAGE_S3_REGION": "us-east-1"}


@contextmanager
def moto_server(log: Path, bucket: str = BUCKET) -> Iterator[str]:
    """Start moto's S3 server, create ``bucket``, yield the endpoint URL; stopped on exit."""
    port = free_port()
    with log.open("w") as out:
        server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            client = s3_client(url)
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.create_bucket(Bucket=bucket)
                    break
                except Exception:
                    assert server.poll() is None and time.monotonic() < deadline, log.read_text()
                    time.sleep(0.2)
            yield url
        finally:
            server.terminate()
            server.wait(timeout=10)


def s3_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS)


def upload_tree(client: Any, folder: Path, prefix: str, bucket: str = BUCKET) -> dict[str, int]:
    """Every file under ``folder`` as ``<prefix>/<relative path>``; returns key -> size."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = f"{prefix}/{path.relative_to(folder).as_posix()}"
        client.upload_file(str(path), bucket, key)
        out[key] = path.stat().st_size
    return out


def objects(client: Any, prefix: str = "cmgh/", bucket: str = BUCKET) -> dict[str, int]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}
