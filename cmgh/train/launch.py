"""How the processes of one pre-training job start, on one node or across the nodes of a SLURM allocation.

One node: ``torchrun --standalone`` with one process per GPU. Several nodes: ``python -m
cmgh.train.launch`` runs in the job's batch step (on the allocation's first node, where SLURM runs
it) and replaces itself with ``srun``, which starts one ``torchrun`` per node. The agents meet in a
c10d rendezvous hosted by the first node's agent (named by the job id, on a port free there), then
number the workers globally (RANK/WORLD_SIZE: the stream's split, rank 0 writes the checkpoints)
and per node (LOCAL_RANK: the GPU); :mod:`cmgh.train.distributed` reads exactly these. A worker
that dies restarts every node's workers (``--max-restarts``), and they resume from the last
checkpoint. Argument lists throughout: nothing here builds a shell string.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from cmgh.errors import CmghError, ConfigError

TORCHRUN = ("-m", "torch.distributed.run")
MAX_RESTARTS = 1  # in-job restarts of all workers after one fails (then the job fails; Snakemake's retry resumes it too)
# The workers' process group gets a store of its own each rendezvous round rather than the agents'
# rendezvous store: over a shared store a restarted node's workers read the previous round's
# addresses (the restart count that should separate the rounds is counted per node; pytorch#135712)
# and never connect. Measured here: with the shared store a killed node's restart hangs.
ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


@dataclass(frozen=True)
class Geometry:
    """The shape of one pre-training job: nodes, GPUs on each, CPU cores on each (one ``srun`` task per node)."""

    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_node: int = 1

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 0 or self.cpus_per_node < 1:
            raise ConfigError(f"a pre-training job of {self.nodes} nodes x {self.gpus_per_node} GPUs x {self.cpus_per_node} cores: "
                              "expected nodes >= 1, GPUs >= 0 and cores >= 1")

    @property
    def processes_per_node(self) -> int:
        """One process per GPU (one on a node without GPUs: a CPU run, gloo)."""
        return max(1, self.gpus_per_node)

    @property
    def world_size(self) -> int:
        return self.nodes * self.processes_per_node


def standalone(python: str, geometry: Geometry) -> list[str]:
    """``torchrun`` on this machine alone: the command prefix of a one-node job with several GPUs."""
    return [python, *TORCHRUN, "--standalone", "--nproc_per_node", str(geometry.processes_per_node), "-m", "cmgh"]


def rendezvous(python: str, geometry: Geometry, host: str, port: int, rdzv_id: str, max_restarts: int = MAX_RESTARTS) -> list[str]:
    """One node's ``torchrun``: the same on every node (the rendezvous hands out the ranks)."""
    return [
        python, *TORCHRUN, "--nnodes", str(geometry.nodes), "--nproc_per_node", str(geometry.processes_per_node),
        "--rdzv_backend", "c10d", "--rdzv_endpoint", f"{host}:{port}", "--rdzv_id", rdzv_id,
        "--max_restarts", str(max_restarts), "-m", "cmgh",
    ]


def srun(geometry: Geometry) -> list[str]:
    """``srun`` starting one task per node with the node's GPUs and cores.

    Explicit, since Snakemake's slurm job step hands the command no SLURM_* settings but the job id;
    ``--kill-on-bad-exit`` ends every node when one node's ``torchrun`` gives up."""
    gpus = [f"--gpus-per-node={geometry.gpus_per_node}"] if geometry.gpus_per_node else []
    return ["srun", f"--nodes={geometry.nodes}", f"--ntasks={geometry.nodes}", "--ntasks-per-node=1",
            f"--cpus-per-task={geometry.cpus_per_node}", *gpus, "--kill-on-bad-exit=1"]


_TOP_LEVEL_COMMA = re.compile(r",(?![^\[]*\])")
_BRACKETS = re.compile(r"\[([^\]]*)\]")


def first_host(nodelist: str) -> str:
    """The first host of a SLURM host list (``gpu[03-04,09],cpu1`` -> ``gpu03``), as ``scontrol show hostnames`` lists it."""
    item = _TOP_LEVEL_COMMA.split(nodelist.strip(), maxsplit=1)[0]
    host = _BRACKETS.sub(lambda m: m.group(1).split(",")[0].split("-")[0], item)
    if not host or any(c in host for c in "[], "):
        raise ConfigError(f"SLURM_JOB_NODELIST: cannot read a host from {nodelist!r} (expected e.g. gpu[01-04])")
    return host


def rendezvous_host(env: Mapping[str, str]) -> str:
    """The first node of the allocation: from its node list when the environment has it, else this
    machine (the batch step runs on the first node)."""
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    return first_host(nodelist) if nodelist else socket.gethostname()


def free_port() -> int:
    """A TCP port free on this machine now (the rendezvous host's agent binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def command(geometry: Geometry, args: Sequence[str], env: Mapping[str, str], *, python: str = sys.executable,
            port: int | None = None, max_restarts: int = MAX_RESTARTS) -> list[str]:
    """The whole multi-node command: ``srun`` of one ``torchrun`` per node running ``cmgh <args>``."""
    job = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if not job:
        raise ConfigError(f"pretrain.nodes: {geometry.nodes} spans the nodes of a SLURM allocation (workflow/profiles/slurm), "
                          "and this job runs outside one (no SLURM_JOB_ID); set pretrain.nodes: 1 to train on one machine")
    host = rendezvous_host(env)
    return [*srun(geometry), *rendezvous(python, geometry, host, port or free_port(), job, max_restarts), *args]


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text}")
        return value
    return parse


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cmgh.train.launch",
        description="Run `cmgh <args>` on every node of this SLURM job: srun starts one torchrun per node (c10d rendezvous).",
    )
    parser.add_argument("--nodes", type=_count(1), required=True)
    parser.add_argument("--gpus-per-node", type=_count(0), default=0)
    parser.add_argument("--cpus-per-node", type=_count(1), default=1)
    parser.add_argument("--max-restarts", type=_count(0), default=MAX_RESTARTS)
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the cmgh command, e.g. pretrain --backbone ma ...")
    opts = parser.parse_args(argv)
    args = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
    try:
        cmd = command(Geometry(opts.nodes, opts.gpus_per_node, opts.cpus_per_node), args, os.environ, max_restarts=opts.max_restarts)
    except CmghError as exc:
        print(f"cmgh: error: {exc}", file=sys.stderr)
        return 2
    print("cmgh: launching " + " ".join(cmd), file=sys.stderr, flush=True)  # the job log names the rendezvous
    try:
        os.execvpe(cmd[0], cmd, {**os.environ, **ENV})  # srun takes this process's place: signals and the exit status are its own
    except OSError as exc:
        print(f"cmgh: error: {cmd[0]}: {exc.strerror} (a multi-node pre-training job runs under SLURM)", file=sys.stderr)
        return 2
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
