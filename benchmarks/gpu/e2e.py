"""End to end on the device: the tiny generated world, one ``cmgh pretrain --stop-after N`` and one ``cmgh evaluate``, as real processes.

The world (HowTo100M- and MSR-VTT-like, the test suite's tiny sizes) is generated and extracted in
this process; then the CLI runs as a user would run it, with this interpreter (``python -m cmgh``),
tracking off (the GPU machine has no MLflow). The run stops on request before its last step, so it
writes its resumable state ``resume.pt`` (a finished run would also plot its conflict histogram,
and matplotlib is not bundled); ``cmgh evaluate`` reads that newest state, as it reads any run
folder. Checked: both exit 0, the state holds N steps, every logged loss and every metric is finite.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.gpu.core import Context, Outcome, Table
from benchmarks.gpu.loader import step_log
from cmgh import checkpoint as ckpt
from cmgh import config, layout
from cmgh.data.extract.decoded import build_vocab, extract
from cmgh.data.synth.generate import synthesize
from tests.helpers import tiny_overrides

REPO = Path(__file__).resolve().parents[2]
BACKBONE, VARIANT, TASK = "ma", "gr_gcl", "msrvtt"


def cli(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m cmgh ARGS`` from the repository root, this checkout's cmgh first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-m", "cmgh", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _tail(proc: subprocess.CompletedProcess[str]) -> str:
    return " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])


def numbers(tree: Any) -> list[Any]:
    """Every leaf of a JSON tree that is a number or a null (a non-finite value written as null)."""
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in numbers(v)]
    if isinstance(tree, list):
        return [x for v in tree for x in numbers(v)]
    return [tree] if tree is None or isinstance(tree, int | float) and not isinstance(tree, bool) else []


def run(ctx: Context) -> Outcome:
    out = Outcome()
    home = ctx.work / "e2e"
    stop, steps = (3, 6) if ctx.smoke else (20, 40)
    world = [*tiny_overrides(home), "data.datasets=[howto100m, msrvtt]", "tracking.enabled=false"]
    training = ["pretrain.batch_size=8", f"pretrain.steps={steps}", "pretrain.warmup_steps=2", "pretrain.checkpoint_every=1000",
                "pretrain.score_every=5", "pretrain.curriculum.warmup_steps=2", "pretrain.num_workers=0"]
    cfg = config.load(overrides=world)
    synthesize(cfg, progress=False)
    build_vocab(cfg)
    for name in ("howto100m", "msrvtt"):
        extract(cfg, name)
    flags = [x for s in world for x in ("--set", s)]  # an evaluation takes model.* and pretrain.* from the run's own config
    timeout = max(60.0, min(600.0, ctx.remaining()))
    rows: list[list[Any]] = []

    pre = cli(["pretrain", "--backbone", BACKBONE, "--variant", VARIANT, "--seed", "0", "--stop-after", str(stop), *flags,
               *[x for s in training for x in ("--set", s)]], timeout)
    run_dir = layout.run_dir(cfg.path("results"), BACKBONE, VARIANT, 0)
    state_path = ckpt.latest(run_dir)
    ok = out.check(pre.returncode == 0, f"cmgh pretrain exited {pre.returncode}: {_tail(pre)}")
    if ok and out.check(state_path.is_file(), f"cmgh pretrain wrote no state in {run_dir}"):
        log = step_log(run_dir)
        losses = log[["loss", "loss_va", "loss_vt"]].to_numpy().ravel().tolist()
        out.check(len(log) == stop, f"train log has {len(log)} steps, {stop} expected")
        out.check(all(math.isfinite(x) for x in losses), "a logged loss is not finite")
        rows.append([f"cmgh pretrain --backbone {BACKBONE} --variant {VARIANT} --stop-after {stop}", pre.returncode,
                     f"{state_path.name} ({state_path.stat().st_size / 1e6:.1f} MB), {len(log)} steps, "
                     f"loss {log['loss'].iloc[0]:.3f} -> {log['loss'].iloc[-1]:.3f}"])
        out.figures.update(pretrain_steps=len(log), first_loss=float(log["loss"].iloc[0]), last_loss=float(log["loss"].iloc[-1]), state=state_path.name)

        ev = cli(["evaluate", "--task", TASK, "--checkpoint", str(run_dir), *flags], timeout)
        metrics_path = layout.eval_dir(cfg.path("results"), TASK, BACKBONE, VARIANT, 0) / layout.METRICS
        if out.check(ev.returncode == 0, f"cmgh evaluate exited {ev.returncode}: {_tail(ev)}") and out.check(
                metrics_path.is_file(), f"cmgh evaluate wrote no {metrics_path}"):
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
            shown = {k: v for k, v in metrics.items() if k not in ("meta", "params", "timing") and "/" not in k}
            values = numbers(shown)
            out.check(bool(values) and all(v is not None and math.isfinite(v) for v in values), f"{metrics_path}: a metric is missing or not finite")
            rows.append([f"cmgh evaluate --task {TASK} --checkpoint <run>", ev.returncode, ", ".join(f"{k} {v}" for k, v in shown.items())])
            out.figures["metrics"] = shown
            out.headline.append(f"end to end: cmgh pretrain ({stop} steps, loss {log['loss'].iloc[0]:.2f} -> {log['loss'].iloc[-1]:.2f}) "
                                f"and cmgh evaluate --task {TASK} ok")
    out.tables.append(Table("the tiny generated world, tracking off", ["command", "exit", "result"], rows))
    return out
