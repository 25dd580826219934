"""The execution profiles (workflow/profiles/*) as a user passes them, and `snakemake --report`.

Dry runs need no cluster: the slurm and kubernetes executor plugins are only asked to plan.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.dag import REPO, TinyDag, planned_jobs, snakemake, tiny_configfile

PROFILES = REPO / "workflow" / "profiles"
# 4 datasets, 1 vocabulary, 1 backbone x 2 variants x 1 seed, 4 tasks x (2 variants + random init), noise
# detection over each run's training, 1 study.
TINY_PLAN = {"all": 1, "evaluate": 8, "evaluate_random_init": 4, "extract": 4, "noise_training": 2, "pretrain": 2, "report": 1, "synth": 4,
             "sweep": 1, "vocab": 1, "total": 28}


def job_resources(output: str, rule: str) -> list[str]:
    """The `resources:` line of every planned job of ``rule`` in a (non-quiet) dry run's output."""
    blocks = re.split(r"\n(?=(?:localrule|rule|checkpoint) \w+:)", output)
    return [re.search(r"resources: (.*)", block).group(1) for block in blocks if re.match(rf"(?:localrule|rule|checkpoint) {rule}:", block)]


@pytest.mark.parametrize("profile", ["default", "slurm", "kubernetes"])
def test_dry_run_with_profile(tmp_path: Path, profile: str) -> None:
    result = snakemake(tmp_path, "--configfile", str(tiny_configfile(tmp_path)), "--profile", str(PROFILES / profile), "-n")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert f"Using profile {PROFILES / profile}" in output
    assert planned_jobs(result) == TINY_PLAN
    pretrain = job_resources(output, "pretrain")
    assert len(pretrain) == 2
    if profile == "default":
        assert all("gpu=0" in line for line in pretrain)
    elif profile == "slurm":
        # The plugin turns `gpu` into `sbatch --gpus=N`; the rule starts torchrun with as many processes.
        assert all("gpu=4" in line and "slurm_partition=gpu" in line and "runtime=4320" in line for line in pretrain)
        assert all("gpu=0" in line and "slurm_partition=cpu" in line for line in job_resources(output, "synth"))
    else:
        assert all("gpu=4" in line and "gpu_manufacturer=nvidia" in line for line in pretrain)
    assert not (tmp_path / "out" / "data").exists()  # a dry run creates nothing


@pytest.mark.slow
def test_html_report_of_a_finished_tiny_dag(tiny_dag: TinyDag, tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    result = snakemake(tiny_dag.workdir, "--configfile", str(tiny_dag.configfile), "--report", str(html))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    text = html.read_text(encoding="utf-8", errors="replace")
    assert html.stat().st_size > 10_000
    for name in ("ablation.md", "summary.md", "noise_roc.png", "fractions.png", "conflict_cosine_hist.png"):
        assert name in text, name
