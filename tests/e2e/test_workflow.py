"""The Snakemake DAG on a tiny config, as a user runs it (real subprocess, real files)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cmgh.config import apply_overrides
from tests.conftest import tiny_overrides

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def tiny_configfile(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(apply_overrides({}, tiny_overrides(tmp_path / "out"))))
    return path


@pytest.mark.slow
def test_dag_builds_features_and_second_run_is_a_noop(tmp_path: Path) -> None:
    configfile = tiny_configfile(tmp_path)
    first = snakemake(tmp_path, "--configfile", str(configfile))
    assert first.returncode == 0, first.stderr[-3000:]
    for name in ("howto100m", "kinetics", "audioset", "msrvtt"):
        index = pd.read_parquet(tmp_path / "out" / "features" / name / "index.parquet")
        assert len(index) > 0
        assert (tmp_path / "out" / "results" / "logs" / "extract" / f"{name}.log").is_file()
    assert (tmp_path / "out" / "results" / "benchmarks" / "extract" / "kinetics.tsv").is_file()
    again = snakemake(tmp_path, "--configfile", str(configfile), "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def test_bad_config_fails_before_any_job(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain: {harmonize: {rule: pcgradd}}\n")
    result = snakemake(tmp_path, "--configfile", str(tiny_configfile(tmp_path)), str(bad), "-n")
    assert result.returncode != 0
    assert "cmgh: config error: pretrain.harmonize.rule: 'pcgradd' is not one of none, cmgh, pcgrad, gradvac" in result.stderr
    assert not (tmp_path / "out" / "data").exists()


def test_default_config_dry_run_from_another_directory(tmp_path: Path) -> None:
    default = snakemake(tmp_path, "-n", "--quiet", "rules")
    assert default.returncode == 0, default.stderr[-2000:]
    out = default.stdout + default.stderr
    for rule in ("synth", "vocab", "extract"):
        assert rule in out
