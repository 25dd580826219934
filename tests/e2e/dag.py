"""Helpers of the end-to-end tests: Snakemake as a user runs it, on the tiny config."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from benchmarks.workflow import planned_jobs as job_counts
from cmgh.config import apply_overrides
from tests.helpers import tiny_overrides
from tests.helpers import REPO

SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


TINY_RUNS = [
    "pretrain.batch_size=8", "pretrain.steps=6", "pretrain.warmup_steps=1", "pretrain.checkpoint_every=3",
    "pretrain.curriculum.warmup_steps=2", "pretrain.seeds=[0]", "model.width=32", "model.heads=2", "model.depth=1",
    "evaluate.noise.batch_size=8", "sweep.run=true", "sweep.n_trials=2", "sweep.steps=4", "sweep.report_every=2",
    "sweep.backbone=ms", "sweep.base_variant=baseline",
]


def tiny_configfile(tmp_path: Path, *extra: str) -> Path:
    tree = apply_overrides({}, [*tiny_overrides(tmp_path / "out"), *TINY_RUNS, *extra])
    tree["variants"] = {"baseline": {}, "gr_gcl": {"pretrain": {"harmonize": {"rule": "cmgh"}, "curriculum": {"rule": "cmgh"}}}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def planned_jobs(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """Job counts per rule from a dry run's summary table."""
    counts = job_counts(result.stdout + result.stderr)
    assert counts, "no job stats in the dry run's output"
    return counts


@dataclass(frozen=True)
class TinyDag:
    """A finished run of the tiny DAG: its working directory, config file, outputs and plan."""

    workdir: Path
    configfile: Path
    planned: dict[str, int]

    @property
    def out(self) -> Path:
        return self.workdir / "out"


def run_tiny_dag(workdir: Path) -> TinyDag:
    """Plan, then run the tiny DAG to its report (what `make reproduce` does, at test size)."""
    configfile = tiny_configfile(workdir)
    planned = planned_jobs(snakemake(workdir, "--configfile", str(configfile), "-n"))
    run = snakemake(workdir, "--configfile", str(configfile))
    assert run.returncode == 0, run.stderr[-3000:]
    return TinyDag(workdir, configfile, planned)
