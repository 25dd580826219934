"""The execution profiles (workflow/profiles/*) as a user passes them, and `snakemake --report`.

Dry runs need no cluster: the slurm and kubernetes executor plugins are only asked to plan.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.e2e.dag import REPO, TinyDag, planned_jobs, snakemake, tiny_configfile

PROFILES = REPO / "workflow" / "profiles"
# 4 datasets, 1 vocabulary, 1 backbone x 2 variants x 1 seed, 4 tasks x (2 variants + random init), noise
# detection over each run's training, 1 study, the evaluations logged to MLflow in one step.
TINY_PLAN = {"all": 1, "evaluate": 8, "evaluate_random_init": 4, "extract": 4, "noise_training": 2, "pretrain": 2, "report": 1, "synth": 4,
             "sweep": 1, "track_evaluations": 1, "vocab": 1, "total": 29}


def job_blocks(output: str, rule: str) -> list[str]:
    """The block of every planned job of ``rule`` in a (non-quiet) dry run's output."""
    blocks = re.split(r"\n(?=(?:localrule|rule|checkpoint) \w+:)", output)
    return [block for block in blocks if re.match(rf"(?:localrule|rule|checkpoint) {rule}:", block)]


def job_resources(output: str, rule: str) -> list[str]:
    """The `resources:` line of every planned job of ``rule`` in a (non-quiet) dry run's output."""
    return [re.search(r"resources: (.*)", block).group(1) for block in job_blocks(output, rule)]


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
        # Nodes and GPUs come from the config (the tiny one asks one node, no GPU): the plugin turns them into
        # `sbatch --nodes=1 --gpus=0`, and the rule starts as many processes as it asked GPUs.
        assert all("gpu=0" in line and "nodes=1" in line and "mpi=" not in line for line in pretrain)
        assert all("slurm_partition=gpu" in line and "runtime=4320" in line for line in pretrain)
        assert all("gpu=0" in line and "slurm_partition=cpu" in line for line in job_resources(output, "synth"))
    else:
        assert all("gpu=4" in line and "nodes=1" in line and "gpu_manufacturer=nvidia" in line for line in pretrain)
    assert not (tmp_path / "out" / "data").exists()  # a dry run creates nothing


def test_the_paper_config_on_slurm_pretrains_over_several_nodes(tmp_path: Path) -> None:
    tree = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    tree["paths"] = {name: f"out/{name}" for name in ("data", "features", "results")}  # same plan, no writes in the repo
    configfile = tmp_path / "paper.yaml"
    configfile.write_text(yaml.safe_dump(tree))
    result = snakemake(tmp_path, "--configfile", str(configfile), "--profile", str(PROFILES / "slurm"), "-n")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    blocks = job_blocks(output, "pretrain")
    assert len(blocks) == planned_jobs(result)["pretrain"] > 0
    for block in blocks:  # sbatch --nodes=2 --ntasks=2 --gpus=8; the command starts one torchrun per node on 4 GPUs each
        resources = dict(item.split("=", 1) for item in re.search(r"resources: (.*)", block).group(1).split(", "))
        assert {k: resources.get(k) for k in ("nodes", "gpu", "tasks", "mpi", "tasks_per_gpu")} == {
            "nodes": "2", "gpu": "8", "tasks": "2", "mpi": "srun", "tasks_per_gpu": "0"}
        assert "-m cmgh.train.launch --nodes 2 --gpus-per-node 4 --cpus-per-node " in block
        assert re.search(r"--cpus-per-node \d+ -- pretrain --backbone", block)


def test_a_local_run_over_several_nodes_is_refused_before_any_job(tmp_path: Path) -> None:
    result = snakemake(tmp_path, "--configfile", str(tiny_configfile(tmp_path, "pretrain.nodes=2")))
    assert result.returncode != 0
    assert ("cmgh: config error: pretrain.nodes: 2 spans the nodes of a SLURM allocation (--profile workflow/profiles/slurm), "
            "and the local executor runs each job on one machine; add --config 'set=[pretrain.nodes=1]'") in result.stderr
    assert not (tmp_path / "out" / "data").exists()  # no job ran


@pytest.mark.slow
def test_html_report_of_a_finished_tiny_dag(tiny_dag: TinyDag, tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    result = snakemake(tiny_dag.workdir, "--configfile", str(tiny_dag.configfile), "--report", str(html))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    text = html.read_text(encoding="utf-8", errors="replace")
    assert html.stat().st_size > 10_000
    for name in ("ablation.md", "summary.md", "noise_roc.png", "fractions.png", "conflict_cosine_hist.png"):
        assert name in text, name
