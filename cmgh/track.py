"""Experiment tracking behind a small protocol: no-op by default, MLflow when it is installed.

The core library only ever sees :class:`Tracker`; the MLflow adapter lives here, at the edge,
and tracking failures (server down, disk full) are logged as warnings, never raised into a run.

:func:`open_tracker` is the one entry point the CLI (and later evaluation and sweeps) use::

    tracker = open_tracker(cfg, "pretrain/ms/gr/seed0", {"backbone": "ms", "variant": "gr", "seed": "0"})
    try:
        pretrain(cfg, spec, tracker=tracker)
    finally:
        tracker.close()

One MLflow experiment per config ``name`` (or ``tracking.experiment``); one run per *run key*:
the caller's key plus a hash of the resolved config, stored as the tag ``cmgh.run_key``. Opening a
key that already has a run reuses that run (a resumed training continues its run, a re-run of a
finished job adds nothing), and metrics of steps the run already holds are not logged twice.
``mlflow`` is imported lazily, only when tracking is enabled, so ``import cmgh.track`` never needs it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from cmgh.io import sha256_file

log = logging.getLogger(__name__)

RUN_KEY_TAG = "cmgh.run_key"  # run key + config hash: identifies a run for resume / dedup
RUN_NAME_TAG = "cmgh.run"  # the readable key alone (``pretrain/ms/gr/seed0``): parents are found by it
RULE_ENV_VARS = ("CMGH_RULE", "SNAKEMAKE_RULE")
MAX_PARAM_VALUE = 500  # MLflow < 2.3 servers (and some hosted stores) reject longer values
MAX_TAG_VALUE = 5000
BATCH_PARAMS = 100  # MLflow log_batch limits: 100 params/tags, 1000 metrics, 1000 entities
BATCH_METRICS = 1000
HASH_EXCLUDE = ("tracking", "variants", "pretrain.seeds", "sweep", "ablation")  # do not change what a single run computes
TERMINAL = ("FINISHED", "FAILED", "KILLED")


class Tracker(Protocol):
    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: str | Path) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def flush(self) -> None: ...

    def close(self, status: str = "FINISHED") -> None: ...


class NullTracker:
    """Tracks nothing: the default, so the core runs without any tracking backend."""

    run_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | Path) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self, status: str = "FINISHED") -> None:
        pass

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close("FINISHED" if exc_type is None else "FAILED")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def server_reachable(uri: str, timeout: float = 5.0) -> bool:
    """Whether an MLflow server answers at all (any HTTP status counts); no retries, short timeout."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialize opening a sqlite store across processes: parallel jobs that create (migrate) a
    fresh store at the same moment leave it broken (``_alembic_tmp_* already exists``)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        fcntl = None  # type: ignore[assignment]
    if fcntl is None or not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        yield
        return
    db = Path(uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class MlflowTracker:
    """One MLflow run through ``MlflowClient`` (no fluent global state: trackers can coexist).

    Metrics are buffered and written with ``log_batch`` every ``flush_every`` steps (or
    ``flush_seconds``), on :meth:`flush` (the trainer calls it at each checkpoint) and on
    :meth:`close`. The first failure of any call is logged as one warning and turns the tracker
    into a no-op; nothing is ever raised into the run.
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_key: str,
        *,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        artifact_location: str | None = None,
        nested_under: str | None = None,
        restart: bool = False,
        flush_every: int = 25,
        flush_seconds: float = 30.0,
    ) -> None:
        self.uri, self.experiment, self.run_key = uri, experiment, run_key
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.resumed = False
        self.flush_every, self.flush_seconds = max(1, int(flush_every)), float(flush_seconds)
        self._broken = False
        self._closed = False
        self._buffer: list[Any] = []
        self._buffered_steps: set[int] = set()
        self._last_flush = time.monotonic()
        self._floor: dict[str, int] = {}  # per metric: last step the run already holds (resume)
        self._params: dict[str, str] = {}  # params the run already holds
        self._remote = _is_remote(uri)
        attempts = 1 if self._remote else 2  # a busy local store gets a second chance
        for attempt in range(attempts):
            try:
                with _store_lock(uri):
                    self._open(run_name or run_key, dict(tags or {}), artifact_location, nested_under, restart)
                break
            except Exception as exc:  # noqa: BLE001 - tracking must never break a run
                if attempt + 1 == attempts:
                    self._fail("open the run", exc)
                else:
                    time.sleep(0.5 + attempt)
        if params:
            self.log_params(params)

    # -- state -------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """True while the tracker writes to MLflow (False once a failure made it a no-op)."""
        return not self._broken and not self._closed and self.run_id is not None

    def _fail(self, what: str, exc: BaseException) -> None:
        if not self._broken:
            log.warning(
                "MLflow tracking (%s) failed to %s: %s: %s; tracking is off for the rest of this run "
                "(its metrics are still in the run's files)",
                self.uri, what, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "",
            )
        self._broken = True
        self._buffer.clear()
        self._buffered_steps.clear()

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._broken:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tracking must never break a run
            self._fail(what, exc)
            return None

    # -- opening -----------------------------------------------------------------------------

    def _open(self, run_name: str, tags: dict[str, Any], artifact_location: str | None, nested_under: str | None, restart: bool) -> None:
        if self._remote and not server_reachable(self.uri):
            raise ConnectionError(f"no MLflow server answers at {self.uri}")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment_id = self._experiment(artifact_location)
        run = None if restart else self._find(RUN_KEY_TAG, self.run_key)
        all_tags = {RUN_KEY_TAG: self.run_key, RUN_NAME_TAG: run_name, **tags}
        if nested_under:
            parent = nested_under if re.fullmatch(r"[0-9a-f]{32}", nested_under) else None
            if parent is None:
                found = self._find(RUN_NAME_TAG, nested_under)
                parent = found.info.run_id if found is not None else None
            if parent is None:
                log.warning("MLflow: no parent run %r to nest %s under", nested_under, run_name)
            else:
                all_tags["mlflow.parentRunId"] = parent
        if run is None:
            run = self.client.create_run(self.experiment_id, tags={RUN_KEY_TAG: self.run_key}, run_name=run_name)
            self.run_id = run.info.run_id
        else:
            self.run_id = run.info.run_id
            self.resumed = True
            self.client.update_run(self.run_id, status="RUNNING")
            self._params = {k: str(v) for k, v in run.data.params.items()}
            for key in run.data.metrics:
                history = self.client.get_metric_history(self.run_id, key)
                if history:
                    self._floor[key] = max(m.step for m in history)
            log.info("MLflow: continuing run %s (%s)", self.run_id, run_name)
        self.set_tags({k: v for k, v in all_tags.items() if v is not None})

    def _experiment(self, artifact_location: str | None) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        try:
            return self.client.create_experiment(self.experiment, artifact_location=artifact_location)
        except MlflowException:  # created meanwhile by a parallel job
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                raise
            return exp.experiment_id

    def _find(self, tag: str, value: str) -> Any:
        quoted = value.replace("\\", "\\\\").replace("'", "\\'")
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{tag}` = '{quoted}'", max_results=1, order_by=["attributes.start_time DESC"]
        )
        return runs[0] if runs else None

    # -- logging -----------------------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.active:
            return
        from mlflow.entities import Param

        new = []
        for key, value in params.items():
            text = "" if value is None else str(value)
            if len(text) > MAX_PARAM_VALUE:
                text = text[: MAX_PARAM_VALUE - 3] + "..."
            if key in self._params:
                if self._params[key] != text:
                    log.debug("MLflow: param %s is already %r in run %s; not changed", key, self._params[key], self.run_id)
                continue
            self._params[key] = text
            new.append(Param(key, text))
        for chunk in _chunks(new, BATCH_PARAMS):
            self._call("log params", self.client.log_batch, self.run_id, params=chunk, synchronous=True)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.active:
            return
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:MAX_TAG_VALUE]) for k, v in tags.items() if v is not None]
        for chunk in _chunks(items, BATCH_PARAMS):
            self._call("set tags", self.client.log_batch, self.run_id, tags=chunk, synchronous=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if not self.active:
            return
        from mlflow.entities import Metric

        stamp = _now_ms()
        for key, value in metrics.items():
            if step is not None and step <= self._floor.get(key, -1):
                continue  # a resumed run redoes steps after its last checkpoint: log each step once
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            self._buffer.append(Metric(key, number, stamp, 0 if step is None else int(step)))
        self._buffered_steps.add(-1 if step is None else int(step))
        if (
            len(self._buffered_steps) >= self.flush_every
            or len(self._buffer) >= BATCH_METRICS
            or time.monotonic() - self._last_flush >= self.flush_seconds
        ):
            self.flush()

    def flush(self) -> None:
        """Write buffered metrics now (the trainer calls this at every checkpoint)."""
        self._last_flush = time.monotonic()
        if not self._buffer or not self.active:
            self._buffer.clear()
            self._buffered_steps.clear()
            return
        if self._remote and not server_reachable(self.uri, timeout=5.0):
            self._fail("flush metrics", ConnectionError(f"no MLflow server answers at {self.uri}"))
            return
        pending, self._buffer = self._buffer, []
        self._buffered_steps.clear()
        for chunk in _chunks(pending, BATCH_METRICS):
            self._call("log metrics", self.client.log_batch, self.run_id, metrics=chunk, synchronous=True)
        if not self._broken:
            for metric in pending:
                self._floor[metric.key] = max(self._floor.get(metric.key, -1), metric.step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a file, or a directory as a folder of the same name; a missing path is skipped."""
        if not self.active:
            return
        path = Path(path)
        if path.is_dir():
            self._call(f"log artifacts {path}", self.client.log_artifacts, self.run_id, str(path), artifact_path or path.name)
        elif path.is_file():
            self._call(f"log artifact {path}", self.client.log_artifact, self.run_id, str(path), artifact_path)
        else:
            log.debug("MLflow: artifact %s does not exist; skipped", path)

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.active:
            self._call(f"log {artifact_file}", self.client.log_text, self.run_id, text, artifact_file)

    def close(self, status: str = "FINISHED") -> None:
        """Flush and end the run with ``status`` (FINISHED, FAILED or KILLED); idempotent."""
        if self._closed:
            return
        self.flush()
        if self.active:
            self._call("end the run", self.client.set_terminated, self.run_id, status if status in TERMINAL else "FINISHED")
        self._closed = True

    def __enter__(self) -> MlflowTracker:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close("FINISHED" if exc_type is None else ("KILLED" if exc_type is KeyboardInterrupt else "FAILED"))


# -- from the config --------------------------------------------------------------------------


def tracking_uri(cfg: Any) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``tracking.uri`` (relative sqlite paths hang off the
    repository root), else ``sqlite:///<paths.results>/mlflow.db``."""
    from cmgh.config import resolve_path

    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    uri = str(cfg.tracking.uri or "").strip()
    if not uri:
        return f"sqlite:///{cfg.path('results') / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rest = uri[len("sqlite:///") :]
        if rest and rest != ":memory:":
            return f"sqlite:///{resolve_path(rest)}"
    if "://" not in uri and uri not in ("databricks",) and not uri.startswith("databricks"):
        return resolve_path(uri).as_uri()  # a bare directory: MLflow's file store
    return uri


def artifact_root(cfg: Any, uri: str) -> str | None:
    """Artifact root of new experiments in a local store (a server decides its own)."""
    from cmgh.config import resolve_path

    if not uri.startswith(("sqlite:", "file:", "postgresql", "mysql", "mssql")):
        return None
    path = str(cfg.tracking.artifacts or "").strip()
    target = resolve_path(path) if path else cfg.path("results") / "mlruns"
    return target.as_uri()


def config_hash(cfg: Any) -> str:
    """Short hash of what a run computes: the resolved config minus tracking, variants, seed list."""
    tree = cfg.to_dict()
    for dotted in HASH_EXCLUDE:
        *parents, leaf = dotted.split(".")
        node = tree
        for key in parents:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:12]


def file_hash(path: Path) -> str:
    if not path.is_file():
        return "missing"
    return sha256_file(path)[:16]


def git_state(cwd: Path | None = None) -> dict[str, str]:
    """``git_commit`` and ``git_dirty`` of the code (empty when git or the repository is missing)."""
    from cmgh.config import REPO_ROOT

    where = str(cwd or REPO_ROOT)

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    status = git("status", "--porcelain")
    state = {"git_commit": commit, "mlflow.source.git.commit": commit}
    if status is not None:
        state["git_dirty"] = "true" if status else "false"
    return state


def provenance_tags(cfg: Any) -> dict[str, str]:
    """Tags every cmgh run carries: code version, data version, noise rates, workflow rule."""
    tags = {
        **git_state(),
        "cmgh.config_hash": config_hash(cfg),
        "noise_audio_rate": str(cfg.data.noise.audio_rate),
        "noise_text_rate": str(cfg.data.noise.text_rate),
        "data_source": str(cfg.data.source),
        "manifest_sha256": file_hash(cfg.path("features") / "howto100m" / "manifest.csv"),
        "mlflow.source.name": "cmgh",
    }
    for var in RULE_ENV_VARS:
        if os.environ.get(var):
            tags["snakemake_rule"] = os.environ[var]
            break
    return tags


def open_tracker(
    cfg: Any,
    run_key: str,
    tags: Mapping[str, Any],
    nested_under: str | None = None,
    *,
    restart: bool = False,
) -> Tracker:
    """The tracker of one run: :class:`NullTracker` when ``tracking.enabled`` is false or mlflow is
    missing, else an :class:`MlflowTracker` on the run of ``run_key`` + config hash (created, or
    reused when it exists; ``restart`` always starts a new run). Never raises for tracking reasons.

    ``cfg`` is the config the run computes with (for pre-training: ``for_variant`` applied); its
    flattened tree becomes the run's params and its YAML the artifact ``config.yaml``.
    ``nested_under`` is a parent run id or a parent's ``run_key`` (e.g. an Optuna study run).
    """
    from cmgh import config as config_mod

    if not bool(cfg.tracking.enabled) or os.environ.get("RANK", "0") != "0":
        return NullTracker()  # disabled, or a non-main process of a distributed run
    try:
        import mlflow  # noqa: F401
    except ImportError:
        log.warning("tracking.enabled is true but mlflow is not installed; runs are not tracked")
        return NullTracker()
    uri = tracking_uri(cfg)
    provenance = provenance_tags(cfg)
    tracker = MlflowTracker(
        uri,
        str(cfg.tracking.experiment or "") or str(cfg.name),
        f"{run_key}@{provenance['cmgh.config_hash']}",
        run_name=run_key,
        tags={**provenance, **{k: str(v) for k, v in tags.items()}},
        params=config_mod.flatten(cfg.to_dict()),
        artifact_location=artifact_root(cfg, uri),
        nested_under=nested_under,
        restart=restart,
        flush_every=int(cfg.tracking.flush_every),
    )
    tracker.log_text(cfg.to_yaml(), "config.yaml")
    return tracker
