"""Where an evaluation job's time goes, and what deferring its MLflow logging saves (cmgh.track.deferred).

A tiny world (Kinetics and HowTo100M features) and one tracked pre-training run are made in a
temporary folder; then, each in a fresh interpreter as the workflow starts them, ``--repeats`` times
interleaved so that machine load hits all alike:

* ``python -c pass`` (the interpreter), ``import cmgh.evaluate.run`` (torch and the evaluation code),
  the same plus ``cmgh.track.mlflow_tracker`` (MLflow, SQLAlchemy);
* ``cmgh evaluate --task kinetics`` tracked live (as by hand: MLflow imported, the sqlite store opened,
  the run logged), and the same job as the workflow runs it (``CMGH_RULE=evaluate``: a record only);
* ``python -m cmgh.track.deferred`` logging 1 and then ``--repeats`` records in one process (the
  workflow's track_evaluations step), which gives its fixed cost and its cost per record.

Each figure is the median child CPU time (user + system: what a job costs a loaded 2-core machine;
wall times below it, as a cross-check). The job's own work is its metrics.json ``timing.total_s``.
The default DAG's 48 evaluation jobs are projected from these. The last line is the per-job ratio:
evaluation job time tracked live / recorded for the workflow's one logging step.

    .venv/bin/python benchmarks/eval_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DAG_EVALUATIONS = 48  # the default DAG's evaluation jobs (4 variants x 2 seeds x 4 tasks + random init x 2 seeds x 4 tasks + 8 noise over training)
SMALL = ["pretrain.batch_size=8", "pretrain.steps=6", "model.width=32", "model.heads=2", "model.depth=1"]


def world(root: Path) -> tuple[Path, Path]:
    """The config file of a tiny world under ``root`` and a tracked pre-training run in it."""
    import yaml

    from cmgh import cli
    from cmgh import config as config_mod
    from cmgh.data.extract import decoded
    from cmgh.data.synth.generate import synthesize
    from tests.helpers import tiny_overrides

    cfg = config_mod.load(overrides=[*tiny_overrides(root), f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
                                     f"tracking.artifacts={root / 'mlruns'}", "evaluate.batch_size=8"])  # fmt: skip
    synthesize(cfg, datasets=["kinetics", "howto100m"], progress=False)
    decoded.build_vocab(cfg)
    for name in ("kinetics", "howto100m"):
        decoded.extract(cfg, name)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    run = root / "run"
    args = ["pretrain", "--config", str(path), "--backbone", "ms", "--variant", "baseline", "--seed", "0", "--out", str(run)]
    assert cli.main([*args, *(a for s in SMALL for a in ("--set", s))]) == 0
    return path, run


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one child process run to its end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def median(samples: list[tuple[float, float]], index: int = 0) -> float:
    return statistics.median(s[index] for s in samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CMGH_RULE", "SNAKEMAKE_RULE")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="cmgh-eval-startup-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        config, run = world(root)
        print(f"tiny world and one tracked pre-training run made in {time.perf_counter() - t0:.0f} s")

        def evaluate(out: Path, rule: str | None) -> tuple[float, float]:
            argv = [py, "-m", "cmgh", "evaluate", "--config", str(config), "--task", "kinetics", "--checkpoint", str(run),
                    "--out", str(out), "--threads", "1"]  # fmt: skip
            return timed(argv, {**env, "CMGH_RULE": rule} if rule else env)

        def sync() -> tuple[float, float]:
            return timed([py, "-m", "cmgh.track.deferred", "--config", str(config)], env)

        stages = {
            "interpreter (python -c pass)": [py, "-c", "pass"],
            "+ torch and cmgh.evaluate": [py, "-c", "import cmgh.evaluate.run"],
            "+ MLflow adapter (mlflow, SQLAlchemy)": [py, "-c", "import cmgh.evaluate.run, cmgh.track.mlflow_tracker"],
        }
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in [*stages, "live", "recorded"]}
        work: list[float] = []
        evaluate(root / "warmup", None)  # page cache, the store's first open
        evaluate(root / "one", "evaluate")
        one = sync()  # one record: the logging step's fixed cost plus one record
        for rep in range(args.repeats):
            for name, argv in stages.items():
                times[name].append(timed(argv, env))
            order = ("live", "recorded") if rep % 2 == 0 else ("recorded", "live")
            for kind in order:
                out = root / f"{kind}{rep}"
                times[kind].append(evaluate(out, None if kind == "live" else "evaluate"))
                work.append(json.loads((out / "metrics.json").read_text())["timing"]["total_s"])
        many = sync()  # --repeats records in one process

    print(f"one evaluation job (Kinetics linear probe, tiny world), median of {args.repeats}: CPU s (wall s)")
    for name in stages:
        print(f"  {name:<40} {median(times[name]):6.2f} ({median(times[name], 1):.2f})")
    live, recorded = median(times["live"]), median(times["recorded"])
    print(f"  {'cmgh evaluate, tracked live':<40} {live:6.2f} ({median(times['live'], 1):.2f})")
    print(f"  {'cmgh evaluate, recorded (workflow job)':<40} {recorded:6.2f} ({median(times['recorded'], 1):.2f})")
    print(f"  {'  of which the evaluation itself':<40} {statistics.median(work):6.2f} (timing.total_s)")
    mlflow_import = median(times[list(stages)[2]]) - median(times[list(stages)[1]])
    print(f"MLflow in a live job: {live - recorded:.2f} s CPU (import {mlflow_import:.2f} s, store open and logging the rest)")
    per_record = max(0.0, (many[0] - one[0]) / max(1, args.repeats - 1))
    fixed = max(0.0, one[0] - per_record)
    print(f"logging step: {fixed:.2f} s CPU fixed + {per_record:.2f} s per record ({args.repeats} records: {many[0]:.2f} s, wall {many[1]:.2f} s)")
    before = DAG_EVALUATIONS * live
    after = DAG_EVALUATIONS * recorded + fixed + DAG_EVALUATIONS * per_record
    print(f"default DAG, {DAG_EVALUATIONS} evaluation jobs: {before:.0f} s CPU tracked live, {after:.0f} s recorded + one logging step "
          f"({before / after:.2f}x less)")
    print(f"evaluation job CPU time, tracked live / recorded for the logging step: {live / recorded:.2f}x")


if __name__ == "__main__":
    main()
