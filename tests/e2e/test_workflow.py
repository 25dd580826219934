"""The Snakemake DAG on a tiny config, as a user runs it (real subprocess, real files)."""

from __future__ import annotations

import re
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


TINY_RUNS = [
    "pretrain.batch_size=8", "pretrain.steps=6", "pretrain.warmup_steps=1", "pretrain.checkpoint_every=3",
    "pretrain.curriculum.warmup_steps=2", "pretrain.seeds=[0]", "model.width=32", "model.heads=2", "model.depth=1",
    "evaluate.noise.batch_size=8",
]


def tiny_configfile(tmp_path: Path, *extra: str) -> Path:
    tree = apply_overrides({}, [*tiny_overrides(tmp_path / "out"), *TINY_RUNS, *extra])
    tree["variants"] = {"baseline": {}, "gr_gcl": {"pretrain": {"harmonize": {"rule": "cmgh"}, "curriculum": {"rule": "cmgh"}}}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def planned_jobs(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """Job counts per rule from a dry run's summary table."""
    counts: dict[str, int] = {}
    lines = (result.stdout + result.stderr).splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"^job\s+count\s*$", line)), None)
    assert start is not None, "no job stats in the dry run's output"
    for line in lines[start + 2 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


@pytest.mark.slow
def test_whole_dag_to_report_then_noop_then_one_branch(tmp_path: Path) -> None:
    configfile = tiny_configfile(tmp_path)
    planned = planned_jobs(snakemake(tmp_path, "--configfile", str(configfile), "-n"))
    # 4 datasets, 1 vocabulary, 1 backbone x 2 variants x 1 seed, 4 tasks x (2 variants + random init).
    assert planned == {"all": 1, "evaluate": 8, "evaluate_random_init": 4, "extract": 4, "pretrain": 2, "report": 1, "synth": 4, "vocab": 1, "total": 25}
    first = snakemake(tmp_path, "--configfile", str(configfile))
    assert first.returncode == 0, first.stderr[-3000:]
    out = tmp_path / "out"
    for name in ("howto100m", "kinetics", "audioset", "msrvtt"):
        assert len(pd.read_parquet(out / "features" / name / "index.parquet")) > 0
        assert (out / "results" / "logs" / "extract" / f"{name}.log").is_file()
    assert (out / "results" / "benchmarks" / "pretrain" / "ms" / "gr_gcl" / "seed0.tsv").is_file()
    for suffix in ("md", "csv", "tex"):
        assert (out / "results" / "tables" / f"ablation.{suffix}").stat().st_size > 0
    assert "gr_gcl" in (out / "results" / "tables" / "ablation.md").read_text()
    assert (out / "results" / "figures" / "noise_roc.png").is_file()
    assert (out / "results" / "mlflow.db").is_file()

    again = snakemake(tmp_path, "--configfile", str(configfile), "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    # A changed hyperparameter of one variant reruns that branch only.
    tree = yaml.safe_load(configfile.read_text())
    tree["variants"]["gr_gcl"]["pretrain"]["curriculum"]["end_keep"] = 0.5
    configfile.write_text(yaml.safe_dump(tree))
    branch = planned_jobs(snakemake(tmp_path, "--configfile", str(configfile), "-n"))
    assert branch == {"all": 1, "evaluate": 4, "pretrain": 1, "report": 1, "total": 7}


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
