"""The shape of a pre-training job as the workflow asks for it: its resources and its command prefix.

``pretrain.nodes`` and ``pretrain.gpus`` (per node) give the resources, and the command prefix is
read back from the job's resources, so what the scheduler grants and what the command starts
cannot disagree. The names are Snakemake's slurm executor's (snakemake-executor-plugin-slurm 2.x):
``nodes`` -> ``sbatch --nodes``, ``gpu`` -> ``--gpus`` (the job's, all nodes together). Above one
node the job also asks ``mpi`` (the plugin then runs the command itself in the batch step rather
than under its own ``srun -n1``, one task on one node), ``tasks`` (``--ntasks``: one per node, each a
``torchrun``) and ``tasks_per_gpu: 0`` (else the plugin asks ``--ntasks-per-gpu=<tasks>``).
Snakemake-free; ``workflow/rules/common.smk`` calls it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cmgh.errors import ConfigError
from cmgh.train.launch import Geometry, standalone

LAUNCHER = "cmgh.train.launch"


def resources(nodes: int, gpus_per_node: int) -> dict[str, int | str | None]:
    """The job's resources (None: not asked; Snakemake drops it)."""
    several = nodes > 1
    return {"nodes": nodes, "gpu": nodes * gpus_per_node, "tasks": nodes if several else None, "mpi": "srun" if several else None,
            "tasks_per_gpu": 0 if several else None}


def geometry(granted: Mapping[str, Any], threads: int) -> Geometry:
    """The job's shape read back from its resources (a profile's ``set-resources`` included)."""
    nodes, gpus = int(granted.get("nodes") or 1), int(granted.get("gpu") or 0)
    if gpus % nodes:
        raise ConfigError(f"resources of pretrain: gpu {gpus} does not split evenly over {nodes} nodes "
                          "(set pretrain.gpus, the GPUs of each node, and pretrain.nodes in the config)")
    if nodes > 1 and (not granted.get("mpi") or granted.get("tasks") != nodes):
        raise ConfigError(f"resources of pretrain: nodes {nodes} with tasks {granted.get('tasks')} and mpi {granted.get('mpi')!r}: "
                          "a profile's set-resources changed the node count alone; set pretrain.nodes in the config "
                          "(the tasks and mpi resources follow it)")
    return Geometry(nodes, gpus // nodes, max(1, int(threads)))


def prefix(python: str, shape: Geometry, single: list[str]) -> list[str]:
    """The command before ``pretrain ...``: ``single`` (one process), ``torchrun`` on one node, or the
    multi-node launcher (:mod:`cmgh.train.launch`), which starts one ``torchrun`` per node under ``srun``."""
    if shape.nodes > 1:
        return [python, "-m", LAUNCHER, "--nodes", str(shape.nodes), "--gpus-per-node", str(shape.gpus_per_node),
                "--cpus-per-node", str(shape.cpus_per_node), "--"]
    return standalone(python, shape) if shape.gpus_per_node > 1 else list(single)


def threads_per_process(shape: Geometry) -> int:
    """Torch threads of each process: a node's cores shared by its processes."""
    return max(1, shape.cpus_per_node // shape.processes_per_node)
