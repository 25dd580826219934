"""Pre-training across nodes (cmgh.train.launch): ``srun`` starts one ``torchrun`` per node, the agents
meet in a c10d rendezvous, the workers split the stream by global rank and rank 0 writes the checkpoints.

Here as 2 "nodes" x 1 process on 127.0.0.1 (gloo): the launcher runs as a job's command does, with
SLURM's job id and node list in its environment and a stand-in ``srun`` (tests/train/fake_srun.py)
that starts its command once per node on this machine; everything after ``srun`` is real.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cmgh import config as config_mod
from cmgh.errors import ConfigError
from cmgh.train import launch
from cmgh.train.launch import Geometry
from cmgh.train.loop import RunSpec, pretrain
from tests.helpers import REPO
from tests.train.test_distributed import SETTINGS, assert_matches_one_process
from tests.train.tiny_runs import assert_same_state, state_of

STEPS = 12
MULTINODE = [*SETTINGS, f"pretrain.steps={STEPS}", "pretrain.checkpoint_every=2"]


# ----------------------------------------------------------------------------- the command


def test_the_command_starts_one_torchrun_per_node_meeting_at_the_first_node() -> None:
    env = {"SLURM_JOB_ID": "4711", "SLURM_JOB_NODELIST": "gpu[07-08]"}
    cmd = launch.command(Geometry(2, 4, 16), ["pretrain", "--seed", "0"], env, python="py", port=29411)
    srun, rest = cmd[: cmd.index("py")], cmd[cmd.index("py"):]
    assert srun == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=16", "--gpus-per-node=4",
                    "--kill-on-bad-exit=1"]
    assert rest == ["py", "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "4", "--rdzv_backend", "c10d",
                    "--rdzv_endpoint", "gpu07:29411", "--rdzv_id", "4711", "--max_restarts", "1", "-m", "cmgh",
                    "pretrain", "--seed", "0"]
    # CPU nodes: no GPU request, one process each
    cpu = launch.command(Geometry(3, 0, 8), [], env, python="py", port=1)
    assert not any(a.startswith("--gpus") for a in cpu) and cpu[cpu.index("--nproc_per_node") + 1] == "1"
    assert Geometry(3, 0, 8).world_size == 3 and Geometry(2, 4, 16).world_size == 8


def test_the_rendezvous_host_is_the_first_of_the_node_list_else_this_machine() -> None:
    assert launch.first_host("gpu[03-04,09],cpu1") == "gpu03"
    assert launch.first_host("rack[1-2]-n[07-08]") == "rack1-n07"
    assert launch.first_host("node-a,node-b") == "node-a"
    assert launch.first_host("solo") == "solo"
    with pytest.raises(ConfigError, match="SLURM_JOB_NODELIST"):
        launch.first_host("gpu[03")
    # Snakemake's slurm job step passes the command the job id but no node list: the batch step runs on the first node
    assert launch.rendezvous_host({"SLURM_JOB_ID": "1"}) == socket.gethostname()


def test_outside_an_allocation_it_refuses_in_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = subprocess.run([sys.executable, "-m", "cmgh.train.launch", "--nodes", "2", "--", "pretrain"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "cmgh: error: pretrain.nodes: 2 spans the nodes of a SLURM allocation (workflow/profiles/slurm), and this job runs "
        "outside one (no SLURM_JOB_ID); set pretrain.nodes: 1 to train on one machine"
    ]
    with pytest.raises(ConfigError, match="nodes >= 1"):
        Geometry(0, 4, 16)


# ----------------------------------------------------------------------------- 2 nodes on this machine


def node_env(tmp_path: Path) -> dict[str, str]:
    """A job's environment with the stand-in srun first on PATH and no tracking store."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    srun = bin_dir / "srun"
    srun.write_text(f"#!{sys.executable}\n" + (Path(__file__).parent / "fake_srun.py").read_text())
    srun.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MLFLOW_", "CMGH_"))}
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}", "SLURM_JOB_ID": "4711", "SLURM_JOB_NODELIST": "localhost",
            "OMP_NUM_THREADS": "1", "FAKE_SRUN_PIDS": str(tmp_path / "pids")}


def launcher(config_file: Path, out: Path, *extra: str) -> list[str]:
    """The rule's command of a 2-node CPU job (cmgh.plan.launch.prefix for nodes=2, gpu=0, 1 core)."""
    return [sys.executable, "-m", "cmgh.train.launch", "--nodes", "2", "--gpus-per-node", "0", "--cpus-per-node", "1", *extra, "--",
            "pretrain", "--config", str(config_file), "--backbone", "ms", "--variant", "gr", "--seed", "0", "--out", str(out),
            "--threads", "1"]


@pytest.fixture(scope="module")
def two_nodes(tiny_world: config_mod.Config, tmp_path_factory: pytest.TempPathFactory) -> tuple[config_mod.Config, Path, Path]:
    """The config, a one-process run and an uninterrupted 2-node run of it."""
    tmp = tmp_path_factory.mktemp("multinode")
    cfg = config_mod.with_overrides(tiny_world, MULTINODE)
    config_file = cfg.write(tmp, "tiny.yaml")
    pretrain(cfg, RunSpec("ms", "gr", 0, tmp / "single"))
    result = subprocess.run(launcher(config_file, tmp / "nodes"), cwd=REPO, env=node_env(tmp), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--rdzv_backend c10d --rdzv_endpoint localhost:" in result.stderr  # the launcher said how it launched
    return cfg, tmp / "single", tmp / "nodes"


@pytest.mark.slow
def test_two_nodes_match_one_process(two_nodes: tuple[config_mod.Config, Path, Path]) -> None:
    cfg, single, nodes = two_nodes
    assert_matches_one_process(cfg, single, nodes, steps=STEPS)


def workers_of(agent: int) -> list[int]:
    """The ``cmgh`` worker processes a torchrun agent started (its children running ``-m cmgh``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == agent and b"cmgh" in cmdline:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
def test_a_killed_node_restarts_every_node_and_resumes_to_the_same_parameters(
    two_nodes: tuple[config_mod.Config, Path, Path], tmp_path: Path
) -> None:
    cfg, _, uninterrupted = two_nodes
    config_file = cfg.write(tmp_path, "tiny.yaml")
    out, env = tmp_path / "nodes", node_env(tmp_path)
    log = (tmp_path / "launch.log").open("w")
    proc = subprocess.Popen(launcher(config_file, out, "--max-restarts", "1"), cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not (out / "resume.pt").is_file():  # a checkpoint to resume from: kill node 1's worker now
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "launch.log").read_text()[-3000:]
            time.sleep(0.01)
        agents = dict(line.split() for line in Path(env["FAKE_SRUN_PIDS"]).read_text().splitlines())
        (worker,) = workers_of(int(agents["1"]))
        os.kill(worker, signal.SIGKILL)
        assert proc.wait(timeout=300) == 0, (tmp_path / "launch.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:  # srun (the stand-in) ends the agents, each agent its workers
            proc.terminate()
            proc.wait(timeout=60)
        log.close()
    text = (tmp_path / "launch.log").read_text()
    resumed = [int(line.rsplit(" ", 1)[1]) for line in text.splitlines() if "resuming" in line and "from step" in line]
    assert resumed and all(0 < step < STEPS for step in resumed), text[-3000:]  # every restarted worker resumed mid-run
    assert_same_state(state_of(out / "checkpoint.pt"), state_of(uninterrupted / "checkpoint.pt"))
