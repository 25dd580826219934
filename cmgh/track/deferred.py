"""Evaluations logged to MLflow in one step: the workflow's evaluation jobs record, the workflow's
``track_evaluations`` job logs.

An evaluation job computes for well under a second on the mini world, yet importing MLflow, opening
its sqlite store and logging cost it about 2.5 s of CPU (benchmarks/eval_startup.py: a job 1.6x
cheaper without), and the default DAG runs 48 of them.
So a job of the workflow's evaluation rules (``CMGH_RULE`` in :data:`DEFER_RULES`) on a local
sqlite store does not import MLflow: its tracker, a :class:`DeferredTracker`, writes what it would
log (the run's key, name, tags, params and parent as :func:`cmgh.track.open_tracker` resolved
them, then every call in order, with its time) as one JSON record into the store's spool
(``<store>.pending/``, beside the sqlite file, which every job that can write the store reaches).
:func:`sync` replays the records through the MLflow adapter in one process (the workflow runs it
once its evaluations are done: ``python -m cmgh.track.deferred``; `cmgh browse` runs it too), so
the store ends up holding what live tracking writes: the same runs, keys, parents, tags, params,
metrics (at their steps and times), datasets, artifacts, start and end times and statuses.

Pre-training, sweeps and an evaluation run by hand (`cmgh evaluate`) track live; a tracking server
(``http(s)://``) is always live (no store to open, and no shared disk to spool to). A record is
deleted once the store holds it; one that could not be logged stays for the next :func:`sync`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cmgh.errors import CmghError
from cmgh.io import atomic_write_json, json_digest, redacted
from cmgh.track.uri import sqlite_path
from cmgh.tracking import DatasetRef, RunContext

log = logging.getLogger("cmgh.track")

DEFER_RULES = ("evaluate", "evaluate_random_init", "noise_training")  # CMGH_RULE of the workflow's evaluation jobs
RULE_ENV = "CMGH_RULE"
SPOOL_SUFFIX = ".pending"  # mlflow.db -> mlflow.db.pending/
RECORD_VERSION = 1


def spool_dir(uri: str) -> Path | None:
    """Where records for the sqlite store at ``uri`` wait (None for any other store)."""
    db = sqlite_path(uri)
    return None if db is None else db.with_name(db.name + SPOOL_SUFFIX)


def deferred_spool(uri: str, stage: str) -> Path | None:
    """The spool this process's ``stage`` run records into, or None when it tracks live."""
    if stage != "evaluate" or os.environ.get(RULE_ENV, "") not in DEFER_RULES:
        return None
    return spool_dir(uri)


def _now_ms() -> int:
    return int(time.time() * 1000)


class DeferredTracker(RunContext):
    """Records a run's tracking calls; :meth:`close` writes them as one record into ``spool``.

    ``opened`` holds :class:`~cmgh.track.mlflow_tracker.MlflowTracker`'s arguments but the URI
    (JSON values: ``nested_under`` a ``[tag, value]`` pair or a string). Never raises for tracking
    reasons: a record that cannot be written is a warning, the run's files hold its results."""

    run_id: str | None = None  # known once the record is logged

    def __init__(self, spool: Path, opened: Mapping[str, Any]) -> None:
        self.spool, self.opened = Path(spool), dict(opened)
        self.start_ms = _now_ms()
        self.calls: list[list[Any]] = []
        self.record: Path | None = None  # the file close() wrote
        self._closed = False

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.calls.append(["log_params", {str(k): None if v is None else str(v) for k, v in params.items()}])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        values = {}
        for name, value in metrics.items():
            try:
                values[str(name)] = float(value)
            except (TypeError, ValueError):
                continue
        self.calls.append(["log_metrics", values, None if step is None else int(step), _now_ms()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.calls.append(["log_artifact", str(Path(path).resolve()), artifact_path])

    def log_text(self, text: str, artifact_file: str) -> None:
        self.calls.append(["log_text", text, artifact_file])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.calls.append(["set_tags", {str(k): str(v) for k, v in tags.items() if v is not None}])

    def log_datasets(self, datasets: Sequence[DatasetRef]) -> None:
        self.calls.append(["log_datasets", [dataclasses.asdict(d) for d in datasets]])

    def log_model(
        self, checkpoint: Path, *, name: str, tags: Mapping[str, Any], params: Mapping[str, Any], weights: bool = False
    ) -> str | None:
        self.calls.append(["log_model", str(Path(checkpoint).resolve()), {"name": name, "tags": {k: str(v) for k, v in tags.items()},
                           "params": {k: str(v) for k, v in params.items()}, "weights": bool(weights)}])
        return None  # the model's id exists once the record is logged

    def flush(self) -> None:
        pass

    def close(self, status: str = "FINISHED") -> None:
        """Write the record (``<start ns>-<key digest>.json``: replayed in the order the runs started); idempotent."""
        if self._closed:
            return
        self._closed = True
        record = {"version": RECORD_VERSION, "open": self.opened, "start_ms": self.start_ms, "end_ms": _now_ms(),
                  "status": status, "calls": self.calls}
        target = self.spool / f"{self.start_ms:013d}-{os.getpid()}-{json_digest(self.opened.get('run_key', ''), 12)}.json"
        try:
            self.spool.mkdir(parents=True, exist_ok=True)
            atomic_write_json(target, record)
            self.record = target
        except OSError as exc:
            log.warning("MLflow: could not record %s for the store (%s: %s); it is not tracked (its files hold its results)",
                        self.opened.get("run_name"), type(exc).__name__, exc)


def replay(uri: str, record: Mapping[str, Any]) -> str | None:
    """Log one record into the store at ``uri`` through the MLflow adapter; the run's id, or None
    when the store did not take all of it (the adapter has warned why)."""
    from cmgh.track.mlflow_tracker import MlflowTracker

    opened = dict(record["open"])
    if isinstance(opened.get("nested_under"), list):
        opened["nested_under"] = tuple(opened["nested_under"])
    tracker = MlflowTracker(uri, **opened, start_time=int(record["start_ms"]))
    for name, *args in record["calls"]:
        if name == "log_metrics":
            metrics, step, stamp = args
            tracker.log_metrics(metrics, step, timestamp=stamp)
        elif name == "log_datasets":
            tracker.log_datasets([DatasetRef(**ref) for ref in args[0]])
        elif name == "log_model":
            tracker.log_model(Path(args[0]), **args[1])
        elif name in ("log_params", "set_tags", "log_text", "log_artifact"):
            getattr(tracker, name)(*args)
        else:
            log.warning("MLflow: %s: unknown call %r in its record; skipped", opened.get("run_name"), name)
    tracker.close(str(record["status"]), end_time=int(record["end_ms"]))
    return None if tracker.broken or tracker.run_id is None else tracker.run_id


@contextlib.contextmanager
def _spool_lock(spool: Path) -> Iterator[None]:
    """One sync per spool at a time (two workflows sharing a store must not log a record twice)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(spool / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def pending(uri: str) -> list[Path]:
    """The records waiting for the store at ``uri``, oldest first."""
    spool = spool_dir(uri)
    return sorted(spool.glob("*.json")) if spool is not None and spool.is_dir() else []


def sync(uri: str) -> tuple[int, int]:
    """Log every waiting record into the store at ``uri``, oldest first: (logged, still waiting).
    Stops at the first record the store does not take (the rest would fail alike); a record that
    is no record (damaged) is moved aside as ``*.json.bad`` with a warning."""
    spool = spool_dir(uri)
    if spool is None or not spool.is_dir():
        return 0, 0
    logged = 0
    with _spool_lock(spool):
        records = pending(uri)
        for i, path in enumerate(records):
            try:
                record = json.loads(path.read_text())
                if record.get("version") != RECORD_VERSION:
                    raise ValueError(f"version {record.get('version')!r}, expected {RECORD_VERSION}")
            except (OSError, ValueError, AttributeError) as exc:
                log.warning("MLflow: %s is no evaluation record (%s); moved aside as %s.bad", path, exc, path.name)
                path.replace(path.with_name(path.name + ".bad"))
                continue
            if replay(uri, record) is None:
                left = len(records) - i
                log.warning("MLflow: %d evaluation record(s) not logged into %s; they wait in %s for the next sync", left, redacted(uri), spool)
                return logged, left
            path.unlink()
            logged += 1
    return logged, 0


def main(argv: list[str] | None = None) -> int:
    """``python -m cmgh.track.deferred --config C [--out F]``: the workflow's track_evaluations step."""
    from cmgh import config as config_mod
    from cmgh.track.uri import tracking_uri

    parser = argparse.ArgumentParser(prog="python -m cmgh.track.deferred", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", "-c", action="append", required=True, help="the config the evaluations ran with")
    parser.add_argument("--out", type=Path, help="write {logged, pending, store} here (the workflow step's output)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_mod.load(args.config)
        uri = tracking_uri(cfg)
    except CmghError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logged, left = sync(uri) if bool(cfg.tracking.enabled) else (0, len(pending(uri)))
    print(f"{logged} evaluation(s) logged into {redacted(uri)}" + (f"; {left} still waiting in {spool_dir(uri)}" if left else ""))
    if args.out is not None:
        atomic_write_json(args.out, {"logged": logged, "pending": left, "store": redacted(uri)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
