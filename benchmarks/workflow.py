"""The whole default DAG, timed: wall time vs the sum of per-job times, and the no-op dry run.

Runs ``snakemake`` on a config (default ``cmgh/defaults/config.yaml``) whose ``paths.*`` are redirected to
a temporary directory, so the repository's ``results/`` is never touched. Then reports:

- wall time of the full run;
- the sum of the per-job times from the ``benchmark:`` TSV files (column ``s``) and their ratio
  to the wall time: the core utilisation of the DAG's parallelism (target >= 1.6 on 2 cores);
  jobs of rules without a ``benchmark:`` directive are not counted (listed, so the ratio is a
  lower bound when some are);
- the start-up cost of a job: an evaluation writes the seconds of its own work into its
  metrics.json (``timing.total_s``), so its job time minus that is what starting the job costs
  (interpreter, imports, config, tracking); their sum over the sum of all job times is a lower
  bound of the DAG's start-up share (a `run:` rule's benchmark starts inside the nested Snakemake
  process that runs it, so that process's own start shows in the wall time only: compare wall
  times across such a change);
- the time of ``snakemake -n`` on the finished tree (target <= 3 s; "Nothing to be done").

The last line printed is the utilisation ratio.

Usage: .venv/bin/python benchmarks/workflow.py [--config FILE] [--cores 2] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from cmgh import config as cmgh_config  # noqa: E402

SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def snakemake(workdir: Path, configfile: Path, cores: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(configfile),
           "--cores", cores, *args]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return result, time.perf_counter() - start


def planned_jobs(output: str) -> dict[str, int]:
    """Job counts per rule from the job-stats table Snakemake prints (dry or real run)."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"^job\s+count\s*$", line)), None)
    counts: dict[str, int] = {}
    if start is None:
        return counts
    for line in lines[start + 2 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def rules_without_benchmark() -> list[str]:
    """Rules of the workflow whose block has no ``benchmark:`` directive (static scan of the sources)."""
    sources = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    missing = []
    for source in sources:
        blocks = re.split(r"^\s*(?:rule|checkpoint)\s+(\w+)\s*:", source.read_text(encoding="utf-8"), flags=re.M)
        for name, body in zip(blocks[1::2], blocks[2::2], strict=True):
            if not re.search(r"^\s+benchmark\s*:", body, flags=re.M):
                missing.append(name)
    return missing


def evaluation_startup(results: Path) -> list[tuple[float, float]]:
    """(job seconds, in-process work seconds) of every evaluation job of the finished tree."""
    pairs = []
    for table in sorted((results / "benchmarks" / "evaluate").rglob("*.tsv")):
        key = table.relative_to(results / "benchmarks" / "evaluate").with_suffix("")  # task/backbone/variant/seed<N>
        metrics = results / "eval" / key / "metrics.json"
        if metrics.is_file():
            work = json.loads(metrics.read_text(encoding="utf-8")).get("timing", {}).get("total_s")
            if work is not None:
                pairs.append((float(pd.read_csv(table, sep="\t")["s"].iloc[0]), float(work)))
    return pairs


def temp_config(source: Path, root: Path) -> tuple[Path, Path]:
    """``source`` with every ``paths`` entry under ``root``; returns (config file, results dir)."""
    tree = cmgh_config.read_yaml(source)
    results = root / "results"
    tree["paths"] = {**tree.get("paths", {}), "data": str(results / "data"), "features": str(results / "features"),
                     "results": str(results)}
    cmgh_config.from_dict(tree)  # fail early, with the config's own message
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
    return path, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=cmgh_config.DEFAULT_CONFIG, help="config to run (paths are redirected)")
    parser.add_argument("--cores", default="2", help="snakemake --cores (default 2, the target machine)")
    parser.add_argument("--workdir", type=Path, default=None, help="run here instead of a fresh temp dir (kept)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()

    root = args.workdir.resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="cmgh-wf-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        configfile, results = temp_config(args.config.resolve(), root)
        print(f"config {args.config} -> {configfile}; cores {args.cores}")

        dry, _ = snakemake(root, configfile, args.cores, "-n", "--quiet", "rules")
        if dry.returncode != 0:
            sys.exit(f"dry run failed:\n{dry.stderr[-3000:]}")
        planned = planned_jobs(dry.stdout + dry.stderr)

        run, wall = snakemake(root, configfile, args.cores)
        if run.returncode != 0:
            sys.exit(f"snakemake failed after {wall:.1f} s:\n{run.stderr[-3000:]}")

        tables = sorted((results / "benchmarks").rglob("*.tsv"))
        per_rule: dict[str, list[float]] = {}
        for table in tables:
            rule = table.relative_to(results / "benchmarks").parts[0]
            per_rule.setdefault(rule, []).extend(pd.read_csv(table, sep="\t")["s"].astype(float).tolist())
        job_seconds = sum(sum(v) for v in per_rule.values())

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        noop, noop_time = snakemake(root, configfile, args.cores, "-n")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        noop_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        noop_text = noop.stdout + noop.stderr
        nothing = "Nothing to be done" in noop_text
        noop2, noop_time2 = snakemake(root, configfile, args.cores, "-n")

        print(f"planned jobs: {planned}")
        print(f"{'rule':<22}{'jobs':>6}{'sum s':>10}{'max s':>10}")
        for rule, seconds in sorted(per_rule.items()):
            print(f"{rule:<22}{len(seconds):>6}{sum(seconds):>10.1f}{max(seconds):>10.1f}")
        # `all` does no work; rules outside this DAG (planned 0 jobs) do not matter here.
        uncounted = {r: planned[r] for r in rules_without_benchmark() if r != "all" and planned.get(r)}
        print(f"rules without benchmark: {', '.join(f'{r} ({n} jobs)' for r, n in uncounted.items()) or 'none'}"
              f"{' -> ratio is a lower bound' if any(uncounted.values()) else ''}")
        print(f"wall time: {wall:.1f} s; sum of job times: {job_seconds:.1f} s over {len(tables)} benchmark files")
        pairs = evaluation_startup(results)
        if pairs:
            startup = [job - work for job, work in pairs]
            per_job = statistics.median(startup)
            n_jobs = sum(len(v) for v in per_rule.values())
            print(f"evaluation jobs: {len(pairs)}, job time {sum(j for j, _ in pairs):.1f} s, own work {sum(w for _, w in pairs):.1f} s; "
                  f"start-up per job: median {per_job:.2f} s, mean {statistics.fmean(startup):.2f} s "
                  f"({sum(startup) / sum(j for j, _ in pairs):.0%} of their job time)")
            print(f"start-up share of the DAG's job time: >= {sum(startup) / job_seconds:.0%} "
                  f"(the evaluations' alone; {n_jobs} jobs x the median would be {n_jobs * per_job:.0f} s of {job_seconds:.0f} s)")
        print(f"no-op `snakemake -n`: {noop_time:.2f} s, then {noop_time2:.2f} s "
              f"(CPU {noop_cpu:.2f} s; {'Nothing to be done' if nothing else 'NOT a no-op: ' + noop_text[-500:]}); target <= 3 s")
        print(f"core utilisation (sum of job times / wall time): {job_seconds / wall:.2f} (target >= 1.6 on 2 cores)")
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        elif args.workdir is None:
            print(f"kept {root}", file=sys.stderr)


if __name__ == "__main__":
    main()
