# Running the cmgh CLI from a rule: shared by common.smk (each results tree) and ablation.smk.
import os
import sys


def cmgh_cli(*args):
    """The cmgh CLI of the running environment as an argument list (never a shell string)."""
    return [sys.executable, "-m", "cmgh.cli", *args]


def run_logged(args, log_file, rule=None):
    """Run a command as an argument list (never a shell string), appending its output to the log.

    ``CMGH_RULE`` tags the MLflow run with the Snakemake rule that produced it.
    """
    import subprocess

    env = {**os.environ, "CMGH_RULE": rule} if rule else None
    with open(log_file, "a", encoding="utf-8") as fh:
        completed = subprocess.run(list(args), stdout=fh, stderr=subprocess.STDOUT, check=False, env=env)
    if completed.returncode != 0:
        tail = open(log_file, encoding="utf-8").read().strip().splitlines()[-1:]
        step = next((a for a in args if a in ("data", "pretrain", "evaluate", "report", "sweep")), args[0])
        raise RuntimeError(f"cmgh {step} failed (exit {completed.returncode}); see {log_file}: {' '.join(tail)}")
