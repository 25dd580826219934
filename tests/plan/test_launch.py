"""The shape of a pre-training job (cmgh.plan.launch): the resources the rule asks, what the installed
slurm executor plugin makes of them, and the command the job starts from what it was granted."""

from __future__ import annotations

import shlex
from types import SimpleNamespace

import pytest
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string

from cmgh.errors import ConfigError
from cmgh.plan import launch
from cmgh.train.launch import Geometry

CLI = ["py", "-m", "cmgh.cli"]


class Granted(dict):
    """A job's resources as the plugin reads them: ``.get`` and attribute access."""

    def __getattr__(self, name: str) -> object:
        return self[name]


def sbatch(resources: dict[str, object], threads: int) -> list[str]:
    """The ``sbatch`` arguments snakemake-executor-plugin-slurm builds for a job of these resources."""
    job = SimpleNamespace(resources=Granted({k: v for k, v in resources.items() if v is not None}), threads=threads)
    params = {"run_uuid": "u", "slurm_logfile": "log", "comment_str": "c", "account": "", "partition": "-p gpu", "workdir": "/w"}
    return shlex.split(get_submit_command(job, params) + set_gres_string(job))


def test_one_node_asks_one_node_and_its_gpus() -> None:
    asked = launch.resources(1, 4)
    assert {k: v for k, v in asked.items() if v is not None} == {"nodes": 1, "gpu": 4}
    args = sbatch({**asked, "mem_mb": 64000}, threads=16)
    assert "--nodes=1" in args and "--gpus=4" in args and "--cpus-per-task=16" in args
    assert not any(a.startswith(("--ntasks", "--ntasks-per-gpu")) for a in args)


def test_several_nodes_get_one_task_per_node_and_all_their_gpus_from_the_plugin() -> None:
    asked = launch.resources(2, 4)
    assert asked == {"nodes": 2, "gpu": 8, "tasks": 2, "mpi": "srun", "tasks_per_gpu": 0}
    args = sbatch({**asked, "mem_mb": 64000}, threads=16)
    assert {"--nodes=2", "--ntasks=2", "--gpus=8", "--cpus-per-task=16"} <= set(args)
    assert not any(a.startswith("--ntasks-per-gpu") for a in args)  # what tasks_per_gpu: 0 keeps out (16 tasks otherwise)
    # The plugin's job step starts a job with an `mpi` resource as it is (the command runs srun itself), any
    # other under `srun -n1`: one task, on one node.
    assert asked["mpi"]


def test_the_command_follows_the_granted_resources() -> None:
    assert launch.prefix("py", launch.geometry(Granted(nodes=1, gpu=0), 4), CLI) == CLI
    assert launch.prefix("py", launch.geometry(Granted(nodes=1, gpu=1), 4), CLI) == CLI
    assert launch.prefix("py", launch.geometry(Granted(gpu=4), 16), CLI) == [
        "py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4", "-m", "cmgh"]
    shape = launch.geometry(Granted(launch.resources(2, 4)), 16)
    assert shape == Geometry(2, 4, 16) and launch.threads_per_process(shape) == 4
    assert launch.prefix("py", shape, CLI) == [
        "py", "-m", "cmgh.train.launch", "--nodes", "2", "--gpus-per-node", "4", "--cpus-per-node", "16", "--"]
    assert launch.threads_per_process(Geometry(1, 0, 3)) == 3


def test_resources_that_cannot_be_one_job_are_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="gpu 6 does not split evenly over 4 nodes"):
        launch.geometry(Granted(nodes=4, gpu=6), 16)
    # a profile's set-resources raising the node count alone: the plugin would start one task on one node
    with pytest.raises(ConfigError, match="set pretrain.nodes in the config"):
        launch.geometry(Granted(nodes=2, gpu=8), 16)
