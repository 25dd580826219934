"""A run's folder: resumable state, the train log, the score dumps and the summary.

Everything a resumed run needs is in the saved state (model, optimizer, scheduler, RNG states,
harmonizer/curriculum state, data position, non-finite counters), so a resumed run continues to
the same result as an uninterrupted one. While running the state is ``resume.pt`` beside the
partial log; once finished it is ``checkpoint.pt`` beside ``train_log.jsonl`` (see
:mod:`cmgh.checkpoint` for why). A state saved under another configuration (another
fingerprint of :func:`cmgh.identity.training_inputs`, backbone, variant or seed) is never resumed
nor overwritten: :func:`check_out` refuses the folder, naming what differs, unless the run is
restarted, which replaces the folder's run (:meth:`RunState.clear`).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cmgh import checkpoint as ckpt
from cmgh import identity, keypaths, layout
from cmgh.config import Config
from cmgh.errors import DataError
from cmgh.harmonize import StepStats
from cmgh.io import atomic_write_json, atomic_write_text, json_digest
from cmgh.tracking import Tracker
from cmgh.data.stream.mixing import StreamPosition
from cmgh.train.setup import Run, RunSpec

log = logging.getLogger(__name__)


RUN_FIELDS = ("backbone", "variant", "seed")
INPUT_KEYS = {"corpus": "data.synth.", "noise": "data.noise.", "features": "", "model": "model.", "pretrain": "pretrain."}  # -> config keys


def inputs(cfg: Config, spec: RunSpec) -> dict[str, Any]:
    """What a run computes from (its variant's resolved ``cfg``): the training inputs and the run's names."""
    return {**identity.training_inputs(cfg), "run": [spec.backbone, spec.variant, spec.seed]}


def fingerprint(cfg: Config, spec: RunSpec) -> str:
    """Hash of what a run computes; a saved state with another fingerprint is not resumed."""
    return json_digest(inputs(cfg, spec), 16)


def _flat(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Training inputs as config keys (``corpus.howto100m.videos`` -> ``data.synth.howto100m.videos``)."""
    tree = json.loads(json.dumps(tree, sort_keys=True, default=str))
    flat = {name: value for name, value in zip(RUN_FIELDS, tree.pop("run", ()), strict=False)}
    for key, value in keypaths.flatten(tree).items():
        head, _, rest = key.partition(".")
        flat[INPUT_KEYS.get(head, f"{head}.") + rest] = value
    return flat


def differences(saved: Mapping[str, Any], now: Mapping[str, Any], most: int = 4) -> str:
    """``pretrain.lr: 0.001 -> 0.003, ...``: what changed between two runs' :func:`inputs`."""
    old, new = _flat(saved), _flat(now)
    changed = [f"{key}: {old.get(key, '(unset)')} -> {new.get(key, '(unset)')}" for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]
    more = f" and {len(changed) - most} more" if len(changed) > most else ""
    return ", ".join(changed[:most]) + more


def check_out(cfg: Config, spec: RunSpec) -> None:
    """The resume guard: raise DataError when ``spec.out`` holds a state (finished or in progress)
    that another configuration saved; it is resumed only by its own configuration and replaced
    only on a restart. ``cfg`` is the variant's resolved config. Reads the state's ``meta`` only."""
    path = ckpt.latest(spec.out)
    if not path.exists():
        return
    meta = ckpt.load(path, mmap=True).get("meta", {})
    expected = fingerprint(cfg, spec)
    if meta.get("fingerprint") == expected:
        return
    try:
        what = differences(json.loads(meta["inputs"]), inputs(cfg, spec))
    except (KeyError, TypeError, ValueError, AttributeError):  # saved before states carried their inputs
        what = f"fingerprint {meta.get('fingerprint')}, now {expected}"
    kind = "a finished run" if path.name == layout.CHECKPOINT else "a run in progress"
    raise DataError(f"{path}: {kind} of another configuration ({what}); `cmgh pretrain --restart` replaces it, "
                    f"another --out keeps it" + ("" if kind == "a finished run" else f" (or delete {path.name})"))


def finished(spec: RunSpec) -> Path | None:
    """The run's checkpoint.pt when ``spec.out`` holds this run finished (its summary written, no newer
    state in progress): a re-run then has nothing to do, and touches nothing (its tracked run included).
    Call after :func:`check_out`, which decides whose state it is."""
    path = ckpt.latest(spec.out)
    return path if path.name == layout.CHECKPOINT and path.is_file() and (spec.out / layout.SUMMARY).is_file() else None


def _read_log(path: Path, before_step: int) -> list[str]:
    """Lines of an existing log for steps before ``before_step`` (a resumed run rewrites the rest)."""
    if not path.exists():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] < before_step:
                kept.append(line)
        except (ValueError, KeyError):
            continue
    return kept


class RunState:
    """The counters and log of a run, and the one place that saves and restores them with the run's parts."""

    def __init__(self, run: Run, tracker: Tracker) -> None:
        self.run, self.tracker = run, tracker
        self.out = run.spec.out
        self.fingerprint = fingerprint(run.cfg, run.spec)
        self.start = 0  # the step a restored run continues from
        self.position = StreamPosition(0, {})  # where the data stream continues
        self.nonfinite_run = 0
        self.nonfinite_total = 0
        self.skipped_total = 0  # unreadable samples the stream substituted (counted, never silent)
        self.log_lines: list[str] = []

    def restore(self) -> None:
        """Load the newest state of the run folder into the run's parts, if it was saved by this configuration."""
        run = self.run
        check_out(run.cfg, run.spec)
        path = ckpt.latest(self.out)
        state = ckpt.load(path) if path.exists() else None
        if state is not None:
            run.model.load_state_dict(state["model"])
            run.optimizer.load_state_dict(state["optimizer"])
            run.scheduler.load_state_dict(state["scheduler"])
            run.harmonizer.load_state_dict(state["harmonizer"])
            self.position = StreamPosition.from_dict(state["position"])
            ckpt.set_rng_state(state["rng"])
            self.start, self.nonfinite_run, self.nonfinite_total = int(state["step"]), int(state["nonfinite_run"]), int(state["nonfinite_total"])
            self.skipped_total = int(state.get("skipped_total", 0))  # absent from a state saved before it was counted
            log.info("resuming %s from step %d", self.out, self.start)
        partial = self.out / layout.PARTIAL_LOG
        previous_log = partial if partial.is_file() else self.out / layout.TRAIN_LOG
        self.log_lines = _read_log(previous_log, self.start) if run.dist.is_main and self.start else []

    def clear(self) -> None:
        """Delete the folder's run (state, logs, summary, score dumps) for a restart: nothing of it is mixed into the new one."""
        if not self.run.dist.is_main:
            return
        for name in (layout.CHECKPOINT, layout.RESUME, layout.TRAIN_LOG, layout.PARTIAL_LOG, layout.SUMMARY):
            (self.out / name).unlink(missing_ok=True)
        shutil.rmtree(self.out / layout.SCORES_DIR, ignore_errors=True)

    def save(self, step: int, position: StreamPosition) -> None:
        """The final state as checkpoint.pt + train_log.jsonl; any other as resume.pt + the partial log.

        ``position`` is the data stream's position before ``step`` (what a resumed run reads next)."""
        run = self.run
        if not run.dist.is_main:
            return
        finished = step == run.total
        spec = run.spec
        ckpt.save(
            self.out,
            {
                "model": run.model.state_dict(),
                "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(),
                "harmonizer": run.harmonizer.state_dict(),
                "position": position.to_dict(),
                "rng": ckpt.rng_state(),
                "step": step,
                "nonfinite_run": self.nonfinite_run,
                "nonfinite_total": self.nonfinite_total,
                "skipped_total": self.skipped_total,
                "meta": {"backbone": spec.backbone, "variant": spec.variant, "seed": spec.seed, "vocab_size": run.vocab_size,
                         "steps": run.total, "fingerprint": self.fingerprint, "inputs": json.dumps(inputs(run.cfg, spec), sort_keys=True, default=str)},
            },
            name=layout.CHECKPOINT if finished else layout.RESUME,
        )
        atomic_write_text(self.out / (layout.TRAIN_LOG if finished else layout.PARTIAL_LOG), "".join(f"{line}\n" for line in self.log_lines))
        if finished:
            for stale in (self.out / layout.RESUME, self.out / layout.PARTIAL_LOG):
                stale.unlink(missing_ok=True)
        self.tracker.flush()  # the tracker then holds every step the checkpoint covers (no gap on resume)

    def record(self, step: int, metrics: dict[str, float]) -> None:
        """One step's metrics into the log (saved with the next state) and the tracker."""
        self.log_lines.append(json.dumps({"step": step, **metrics}))
        self.tracker.log_metrics(metrics, step=step)

    def finish(self) -> None:
        """The summary of a finished run, and its outputs handed to the tracker."""
        atomic_write_json(self.out / layout.SUMMARY, summary(self.log_lines, self.run.spec, self.run.total, self.nonfinite_total, self.skipped_total))
        if self.skipped_total:
            log.warning("%s: %d unreadable training samples were substituted over the run (each is named in the log above; "
                        "summary.json skipped_samples, metric skipped_total)", self.out, self.skipped_total)
        self.tracker.log_artifact(self.out / layout.TRAIN_LOG)
        self.tracker.log_artifact(self.out / layout.SUMMARY)
        self.tracker.log_artifact(self.out / layout.SCORES_DIR)


def write_scores(out: Path, step: int, batch: Mapping[str, Any], stats: StepStats, l_va: torch.Tensor, l_vt: torch.Tensor) -> None:
    """Per-sample scores of one batch at a configured step (histograms, noise detection over training).

    Each row names its clip (corpus, item, window in the source video): streamed clips draw a new
    window every epoch, so the item alone does not say which seconds were scored."""
    table = pd.DataFrame(
        {
            "step": step,
            "item_id": batch["item_id"],
            "dataset": batch["dataset"],
            "clip_start": torch.as_tensor(batch["clip_start"]).double().numpy(),
            "clip_end": torch.as_tensor(batch["clip_end"]).double().numpy(),
            "cos": stats.cosine.float().numpy(),
            "cos_representation": stats.cosine_representation.float().numpy(),
            "loss_va": l_va.detach().float().numpy(),
            "loss_vt": l_vt.detach().float().numpy(),
            "kept": (torch.ones_like(stats.cosine, dtype=torch.bool) if stats.weights is None else stats.weights.kept).numpy(),
        }
    )
    atomic_write_text(layout.scores_file(out, step), table.to_csv(index=False))


def summary(lines: list[str], spec: RunSpec, total: int, nonfinite: int, skipped: int = 0) -> dict[str, Any]:
    rows = [json.loads(line) for line in lines]
    last = rows[-10:] if rows else []

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in last])) if last else float("nan")

    return {
        "backbone": spec.backbone,
        "variant": spec.variant,
        "seed": spec.seed,
        "steps": total,
        "nonfinite_steps": nonfinite,
        "skipped_samples": skipped,
        "loss_va_last10_mean": mean("loss_va"),  # the mean of the last 10 logged steps (one step is noisy)
        "loss_vt_last10_mean": mean("loss_vt"),
        "first_loss_va": rows[0]["loss_va"] if rows else float("nan"),
        "first_loss_vt": rows[0]["loss_vt"] if rows else float("nan"),
        "mean_conflict_fraction": float(np.mean([r["conflict_fraction"] for r in rows])) if rows else float("nan"),
        # cost: the median step (robust to the first steps' warm-up and to a busy machine's outliers) and the peak
        "median_step_time_s": float(np.median(times)) if (times := [r["step_time_s"] for r in rows if "step_time_s" in r]) else float("nan"),
        "peak_memory_mb": max((r["peak_memory_mb"] for r in rows if "peak_memory_mb" in r), default=float("nan")),
    }


def load_metrics_log(out: Path) -> pd.DataFrame:
    """The per-step log of a finished run."""
    path = Path(out) / layout.TRAIN_LOG
    return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])
