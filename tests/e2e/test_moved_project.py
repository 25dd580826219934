"""A project folder moved (or renamed) keeps Snakemake's records of the jobs it ran.

Snakemake keys each output's record (.snakemake/metadata) by the output's path as the rule declares
it, and compares a job's params with the recorded ones (a changed param reruns the job). So every
path a rule declares or passes (outputs, inputs, logs, the resolved config, the interpreter where it
lies in the project, as `make setup`'s .venv does) is relative to the working directory: a project run
where it lies, then from the folder renamed, finds every record and no change.
"""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import yaml

from cmgh.config import apply_overrides
from tests.e2e.dag import TINY_RUNS
from tests.helpers import REPO, tiny_overrides

# Two cheap jobs of the tiny DAG: the Kinetics-like clips (checkpoint synth) and their decoded features (extract).
TARGET = "out/features/kinetics/index.parquet"


def make_project(root: Path) -> Path:
    """A project as a checkout holds it: its Snakefile, workflow/, a config of relative paths and a
    .venv of its own (reaching the test interpreter's packages through a .pth line: nothing installed)."""
    root.mkdir()
    shutil.copy(REPO / "Snakefile", root / "Snakefile")
    shutil.copytree(REPO / "workflow", root / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    tree = apply_overrides({}, [*tiny_overrides(Path("out")), *TINY_RUNS])
    tree["variants"] = {"baseline": {}, "gr": {"pretrain": {"harmonize": {"rule": "cmgh"}}}}
    (root / "config").mkdir()
    (root / "config" / "tiny.yaml").write_text(yaml.safe_dump(tree))
    env = root / ".venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(env), "platbase": str(env)}))
    (site / "shared-packages.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    return root


def snakemake_in(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Snakemake as a user runs it in the project folder (its own Snakefile, its own .venv)."""
    cmd = [str(project / ".venv" / "bin" / "python"), "-m", "snakemake", "--cores", "2", *args,
           "--configfile", "config/tiny.yaml"]  # last: it takes every word after it
    return subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=900)


def test_no_planned_job_names_the_project_folder(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    plan = snakemake_in(project, "-n", "--printshellcmds")
    output = plan.stdout + plan.stderr
    assert plan.returncode == 0, output[-3000:]
    jobs = output[output.index("Job stats:"):]  # each job's output, input, log, wildcards and command, then the stats
    assert "rule pretrain:" in jobs and "rule evaluate:" in jobs and "checkpoint synth:" in jobs
    assert "Shell command: .venv/bin/python -m cmgh.cli data synth --dataset kinetics --config out/results/config/resolved.yaml" in jobs
    assert str(project) not in jobs, [line for line in jobs.splitlines() if str(project) in line][:5]


def test_a_renamed_project_finds_every_record_and_no_change(tmp_path: Path) -> None:
    first = make_project(tmp_path / "first")
    run = snakemake_in(first, TARGET)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert (first / TARGET).is_file()

    moved = first.rename(tmp_path / "moved")
    # Every rerun trigger (mtime, params, input, code, software-env): nothing to do, and every record found
    # (a record keyed by the old folder's path: "2 jobs have missing provenance/metadata").
    again = snakemake_in(moved, "-n", TARGET)
    output = again.stdout + again.stderr
    assert again.returncode == 0, output[-3000:]
    assert "Nothing to be done" in output, output[-3000:]
    assert "missing provenance" not in output and "outdated provenance" not in output, output[-3000:]
    summary = snakemake_in(moved, "--summary", TARGET)
    header, *rows = (line.split("\t") for line in summary.stdout.strip().splitlines())
    assert header[:5] == ["output_file", "date", "rule", "log-file(s)", "status"], summary.stdout[-2000:]
    recorded = {row[0]: (row[2], row[3], row[4]) for row in rows}  # the log file comes from the job's record ("-" without one)
    assert recorded == {
        "out/data/kinetics/.complete": ("synth", "out/results/logs/synth/kinetics.log", "ok"),
        TARGET: ("extract", "out/results/logs/extract/kinetics.log", "ok"),
    }, summary.stdout[-2000:]
