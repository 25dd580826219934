"""A stand-in for SLURM's ``srun`` on one machine: runs its command once per "node" (``--nodes=N``),
concurrently, each with SLURM_NODEID/SLURM_PROCID set, and ends them all when one fails
(``--kill-on-bad-exit``) or when it is terminated itself (SIGTERM, as srun forwards it). Written as the ``srun`` on PATH of tests/train/test_multinode.py; the pid
of each node's process goes to $FAKE_SRUN_PIDS (one line ``node pid``) so a test can kill one node.
Options it does not know are refused, so a launcher asking for more than this models fails loudly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

KNOWN = ("--nodes=", "--ntasks=", "--ntasks-per-node=", "--cpus-per-task=", "--gpus-per-node=", "--kill-on-bad-exit=")


def main(argv: list[str]) -> int:
    nodes, i = 1, 0
    while i < len(argv) and argv[i].startswith("-"):
        if not argv[i].startswith(KNOWN):
            print(f"fake srun: unknown option {argv[i]}", file=sys.stderr)
            return 2
        if argv[i].startswith("--nodes="):
            nodes = int(argv[i].split("=", 1)[1])
        i += 1
    cmd = argv[i:]
    procs = [subprocess.Popen(cmd, env={**os.environ, "SLURM_NODEID": str(n), "SLURM_PROCID": str(n)}) for n in range(nodes)]

    def forward(signum: int, _frame: object) -> None:  # torchrun ends its workers on SIGTERM
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    if os.environ.get("FAKE_SRUN_PIDS"):
        with open(os.environ["FAKE_SRUN_PIDS"], "w") as fh:
            fh.writelines(f"{n} {p.pid}\n" for n, p in enumerate(procs))
    while True:
        codes = [p.poll() for p in procs]
        bad = [c for c in codes if c not in (None, 0)]
        if bad:
            forward(signal.SIGTERM, None)
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
            return bad[0]
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
