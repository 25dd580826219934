"""A trial over several pre-training seeds: the order it runs them in, and its tracked run seen per seed."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cmgh.tracking import DatasetRef, NullTracker, RunContext, Tracker


def seed_prefix(seed: int) -> str:
    """What every metric and artifact of one seed is filed under in the trial's run (``seed_2/``)."""
    return f"seed_{seed}/"


def seed_order(seeds: Sequence[int], sampler_seed: int, trial: int) -> list[int]:
    """The seeds in the order ``trial`` runs them: shuffled per trial (reproducibly), as Optuna's
    WilcoxonPruner advises, so that pruned trials are not all judged on the first seeds of the list."""
    order = [int(s) for s in seeds]
    random.Random(f"{sampler_seed}/{trial}").shuffle(order)
    return order


class SeedTracker(RunContext):
    """The trial's run as one seed's pre-training sees it: metrics and artifacts under
    :func:`seed_prefix`, so that seeds logging the same step never overwrite (nor, through the
    tracker's per-key step floor, drop) each other. Closing it leaves the trial's run open."""

    def __init__(self, inner: Tracker, seed: int) -> None:
        self.inner, self.prefix = inner, seed_prefix(seed)
        self.run_id = inner.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.inner.log_params(params)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.inner.log_metrics({f"{self.prefix}{k}": v for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: str | Path) -> None:
        if isinstance(self.inner, NullTracker):
            return
        from cmgh.track.mlflow_tracker import MlflowTracker

        if isinstance(self.inner, MlflowTracker):
            path = Path(path)
            self.inner.log_artifact(path, f"{self.prefix}{path.name}" if path.is_dir() else self.prefix.rstrip("/"))

    def log_text(self, text: str, artifact_file: str) -> None:
        self.inner.log_text(text, f"{self.prefix}{artifact_file}")

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.inner.set_tags(tags)

    def log_datasets(self, datasets: Sequence[DatasetRef]) -> None:
        self.inner.log_datasets(datasets)  # every seed reads the same corpora: the trial's run lists them once

    def log_model(
        self, checkpoint: Path, *, name: str, tags: Mapping[str, Any], params: Mapping[str, Any], weights: bool = False
    ) -> str | None:
        return self.inner.log_model(checkpoint, name=f"{name}-{self.prefix.rstrip('/')}", tags=tags, params=params, weights=weights)

    def flush(self) -> None:
        self.inner.flush()

    def close(self, status: str = "FINISHED") -> None:
        self.flush()
