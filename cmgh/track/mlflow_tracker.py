"""The MLflow adapter behind :class:`cmgh.tracking.Tracker`: a tracked run's writer (its siblings
in :mod:`cmgh.track` import mlflow too, for lineage, system metrics and the UI link).

:func:`cmgh.track.open_tracker` imports it only when tracking is on (an ImportError there means
"mlflow is not installed": runs go untracked).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cmgh.tracking import EVALUATION, TERMINAL, DatasetRef, RunContext
from cmgh.track import lineage
from cmgh.track.names import headline_keys, metric_key
from cmgh.track.store import is_remote, server_reachable, store_lock
from cmgh.track import views
from cmgh.track.views import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG
from cmgh.track.uri import redacted

log = logging.getLogger("cmgh.track")  # the package's logger: one name to filter all tracking by

RUN_KEY_TAG = "cmgh.run_key"  # run key + config hash: identifies a run for resume / dedup
DESCRIPTION_TAG = "mlflow.note.content"  # the experiment's description in MLflow's UI (Markdown)
TRACKING_ERROR_TAG = "cmgh.tracking_error"  # on a run whose tracking failed mid-way: what it lacks
RUN_NAME_TAG = "cmgh.run"  # the readable key alone (``pretrain/ms/gr/seed0``): parents are found by it
MAX_PARAM_VALUE = 500  # MLflow < 2.3 servers (and some hosted stores) reject longer values
MAX_TAG_VALUE = 5000
BATCH_PARAMS = 100  # MLflow log_batch limits: 100 params/tags, 1000 metrics, 1000 entities
BATCH_METRICS = 1000



def _now_ms() -> int:
    return int(time.time() * 1000)


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def experiment_description(name: str) -> str:
    """What a user opening the experiment reads first: what the runs are and where the answer is."""
    return (f"cmgh experiment `{name}`: VATT-style video-audio-text pre-training with cross-modality gradient harmonization "
            "(a reconstruction of CMGH, NeurIPS 2022). Top-level runs are pre-training runs (tags `variant`, `backbone`, `seed`); "
            "each run's downstream evaluations (Kinetics, AudioSet, MSR-VTT, noise detection) are its child runs, and each "
            f"evaluation's headline metric is on the pre-training run too ({', '.join(f'`{k}`' for k in headline_keys())}): the saved "
            f"view *{views.VIEW_NAME}* lists them. Optuna trials nest under their study's run. Compare variants: group by "
            "`tags.variant` (seeds averaged). Every comparison with its "
            "interval and verdict: the report's `tables/summary.md` (`results/report.html`); `cmgh browse` prints where.")

class MlflowTracker(RunContext):
    """One MLflow run through ``MlflowClient`` (no fluent global state: trackers can coexist).

    Metrics are buffered and written with ``log_batch`` every ``flush_every`` steps (or
    ``flush_seconds``), on :meth:`flush` (the trainer calls it at each checkpoint) and on
    :meth:`close`. The first failure of any call is logged as one warning and turns the tracker
    into a no-op; nothing is ever raised into the run.

    ``parent_metrics`` (MLflow keys) also go to the parent run, at the same step: an evaluation's
    headline metrics on the pre-training run it scored, so the runs table, Compare and group-by show
    them there (logged again at the same step, a re-run's newer value is the one MLflow shows).
    ``start_time`` (ms) dates a run created now (a deferred evaluation's own start, :mod:`cmgh.track.deferred`).
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
        nested_under: str | tuple[str, str] | None = None,
        restart: bool = False,
        flush_every: int = 25,
        flush_seconds: float = 30.0,
        system_metrics: float | None = None,
        parent_metrics: Collection[str] = (),
        start_time: int | None = None,
    ) -> None:
        self.uri, self.experiment, self.run_key = uri, experiment, run_key
        self.parent_id: str | None = None  # the run this one nests under (parent_metrics go there too)
        self.parent_metrics = frozenset(parent_metrics)
        self.shown = redacted(uri)  # the URI as messages and tags show it (no password)
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.resumed = False
        self.flush_every, self.flush_seconds = max(1, int(flush_every)), float(flush_seconds)
        self._broken = False
        self._failure = ""
        self._closed = False
        self._buffer: list[Any] = []
        self._buffered_steps: set[int] = set()
        self._last_flush = time.monotonic()
        self._floor: dict[str, int] = {}  # per metric: last step the run already holds (resume)
        self._params: dict[str, str] = {}  # params the run already holds
        self._tags: dict[str, str] = {}  # tags the run held when opened
        self._inputs: set[lineage.InputKey] = set()  # datasets the run lists as inputs
        self.model_id: str | None = None  # the LoggedModel this run's metrics are about (an evaluation: its checkpoint's)
        self._metric_dataset: tuple[str, str] | None = None  # name, digest: the one dataset an evaluation scores on
        self._remote = is_remote(uri)
        self._system: Any = None  # the system-metrics sampler (cmgh.track.system), while the run is open
        attempts = 1 if self._remote else 2  # a busy local store gets a second chance
        for attempt in range(attempts):
            try:
                with store_lock(uri):
                    self._open(run_name or run_key, dict(tags or {}), artifact_location, nested_under, restart, start_time)
                break
            except Exception as exc:  # noqa: BLE001 - tracking must never break a run
                if attempt + 1 == attempts:
                    self._fail("open the run", exc)
                else:
                    time.sleep(0.5 + attempt)
        if params:
            self.log_params(params)
        if system_metrics is not None and self.active:
            self._start_system_metrics(float(system_metrics))

    # -- state -------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """True while the tracker writes to MLflow (False once a failure made it a no-op)."""
        return not self._broken and not self._closed and self.run_id is not None

    @property
    def broken(self) -> bool:
        """True once a failure made the tracker a no-op (the store does not hold all of the run)."""
        return self._broken

    def _start_system_metrics(self, interval: float) -> None:
        """Sample system metrics into the run (:mod:`cmgh.track.system`); a failure only warns."""
        try:
            from cmgh.track.system import SystemMetrics

            self._system = SystemMetrics(self.uri, str(self.run_id), interval, resume=self.resumed)
        except Exception as exc:  # noqa: BLE001 - system metrics must never break a run
            log.warning("MLflow system metrics are off for this run: %s: %s", type(exc).__name__, redacted(str(exc).splitlines()[0]) if str(exc) else "")

    def _fail(self, what: str, exc: BaseException) -> None:
        first = redacted(str(exc).splitlines()[0]) if str(exc) else ""
        if not self._broken:
            log.warning(
                "MLflow tracking (%s) failed to %s: %s: %s; tracking is off for the rest of this run "
                "(its metrics are still in the run's files)",
                self.shown, what, type(exc).__name__, first,
            )
            self._failure = f"failed to {what}: {type(exc).__name__}: {first}; nothing logged after that (the run's files hold it)"
        self._broken = True
        if self._system is not None:
            self._system.cancel()
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

    def _open(self, run_name: str, tags: dict[str, Any], artifact_location: str | None, nested_under: str | tuple[str, str] | None,
              restart: bool, start_time: int | None = None) -> None:
        """Find or create the run; the parent is a run id, a ``(tag, value)`` its newest run carries, or a run name."""
        if self._remote and not server_reachable(self.uri):
            raise ConnectionError(f"no MLflow server answers at {self.shown}")
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment_id = self._experiment(artifact_location)
        run = None if restart else self._find(RUN_KEY_TAG, self.run_key)
        all_tags = {RUN_KEY_TAG: self.run_key, RUN_NAME_TAG: run_name, **tags}
        if nested_under:
            tag, value = nested_under if isinstance(nested_under, tuple) else (RUN_NAME_TAG, nested_under)
            parent = value if tag == RUN_NAME_TAG and re.fullmatch(r"[0-9a-f]{32}", value) else None
            found = self._find(tag, value) if parent is None else self._run(parent)
            if found is None:
                log.warning("MLflow: no parent run %r to nest %s under", value, run_name)
            else:
                all_tags["mlflow.parentRunId"] = self.parent_id = found.info.run_id
                self.model_id = found.data.tags.get(lineage.MODEL_TAG)
        if run is None:
            run = self.client.create_run(self.experiment_id, start_time=start_time, tags={RUN_KEY_TAG: self.run_key}, run_name=run_name)
            self.run_id = run.info.run_id
        else:
            self.run_id = run.info.run_id
            self.resumed = True
            self.client.update_run(self.run_id, status="RUNNING")
            self._params = {k: str(v) for k, v in run.data.params.items()}
            self._tags = dict(run.data.tags)
            self._inputs = lineage.held_inputs(run)
            for key in run.data.metrics:
                history = self.client.get_metric_history(self.run_id, key)
                if history:
                    self._floor[key] = max(m.step for m in history)
            log.info("MLflow: continuing run %s (%s)", self.run_id, run_name)
        self.set_tags({k: v for k, v in all_tags.items() if v is not None})

    def _experiment(self, artifact_location: str | None) -> str:
        """Find or create the experiment, tagged as model training (the UI then opens it on its runs)."""
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            try:
                return self.client.create_experiment(
                    self.experiment, artifact_location=artifact_location,
                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, DESCRIPTION_TAG: experiment_description(self.experiment),
                          views.VIEW_TAG: views.saved_view(_now_ms())},
                )
            except MlflowException:  # created meanwhile by a parallel job
                exp = self.client.get_experiment_by_name(self.experiment)
                if exp is None:
                    raise
        if exp.lifecycle_stage == "deleted":
            self.client.restore_experiment(exp.experiment_id)
        if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        if views.needs_saving(exp.tags.get(views.VIEW_TAG)):  # an experiment made before the view, or by an older cmgh
            self.client.set_experiment_tag(exp.experiment_id, views.VIEW_TAG, views.saved_view(_now_ms()))
        return exp.experiment_id

    def _run(self, run_id: str) -> Any:
        try:
            return self.client.get_run(run_id)
        except MlflowException:
            return None

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
        new = []
        for name, value in params.items():
            key = metric_key(name)
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
        items = [RunTag(k, str(v)[:MAX_TAG_VALUE]) for k, v in tags.items() if v is not None]
        for chunk in _chunks(items, BATCH_PARAMS):
            self._call("set tags", self.client.log_batch, self.run_id, tags=chunk, synchronous=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, timestamp: int | None = None) -> None:  # timestamp: ms, else now
        if not self.active:
            return
        stamp = _now_ms() if timestamp is None else int(timestamp)
        for name, value in metrics.items():
            key = metric_key(name)
            if step is not None and step <= self._floor.get(key, -1):
                continue  # a resumed run redoes steps after its last checkpoint: log each step once
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            name, digest = self._metric_dataset or (None, None)
            self._buffer.append(Metric(key, number, stamp, 0 if step is None else int(step), self.model_id, name, digest))
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
            self._fail("flush metrics", ConnectionError(f"no MLflow server answers at {self.shown}"))
            return
        pending, self._buffer = self._buffer, []
        self._buffered_steps.clear()
        for chunk in _chunks(pending, BATCH_METRICS):
            self._call("log metrics", self.client.log_batch, self.run_id, metrics=chunk, synchronous=True)
        if not self._broken:
            for metric in pending:
                self._floor[metric.key] = max(self._floor.get(metric.key, -1), metric.step)
            self._mirror(pending)

    def _mirror(self, pending: list[Any]) -> None:
        """The ``parent_metrics`` among ``pending`` onto the parent run (not linked to the model or the
        dataset: the evaluation's own metric is); a failure there only warns, the run's own metrics are in."""
        mirrored = [Metric(m.key, m.value, m.timestamp, m.step) for m in pending if m.key in self.parent_metrics]
        if not mirrored or self.parent_id is None:
            return
        try:
            self.client.log_batch(self.parent_id, metrics=mirrored, synchronous=True)
        except Exception as exc:  # noqa: BLE001 - tracking must never break a run
            log.warning("MLflow: %s not logged on the parent run %s: %s: %s", ", ".join(sorted({m.key for m in mirrored})),
                        self.parent_id, type(exc).__name__, redacted(str(exc).splitlines()[0]) if str(exc) else "")

    def log_datasets(self, datasets: Sequence[DatasetRef]) -> None:
        """Log the datasets the run reads as its inputs, each (name, digest, context) once per run;
        an evaluation's one dataset also goes with its metrics (and the model's)."""
        if not self.active:
            return
        evaluated = [d for d in datasets if d.context == EVALUATION]
        if len(evaluated) == 1:
            self._metric_dataset = (evaluated[0].name, evaluated[0].digest)
        fresh = lineage.new_inputs(datasets, self._inputs)
        if fresh:
            inputs = self._call("describe the datasets", lineage.dataset_inputs, fresh)
            if inputs and self._call("log inputs", self.client.log_inputs, self.run_id, datasets=inputs) is None and not self._broken:
                self._inputs.update((d.name, d.digest, d.context) for d in fresh)

    def log_model(
        self, checkpoint: Path, *, name: str, tags: Mapping[str, Any], params: Mapping[str, Any], weights: bool = False
    ) -> str | None:
        """The checkpoint as the run's LoggedModel (:func:`cmgh.track.lineage.log_model`), once per
        run: a run that has one (tag ``cmgh.model_id``) keeps it."""
        if not self.active:
            return None
        if self._tags.get(lineage.MODEL_TAG):
            return self._tags[lineage.MODEL_TAG]
        self.flush()
        model_id = self._call(
            "log the model", lineage.log_model, self.client, self.experiment_id, self.run_id, Path(checkpoint),
            name=name, tags=tags, params=params, weights=weights,
        )  # fmt: skip
        if model_id:
            self.set_tags({lineage.MODEL_TAG: model_id})
            self._tags[lineage.MODEL_TAG] = model_id
        return model_id

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

    def _end_failed(self) -> None:
        """Tracking failed mid-run: end the run FAILED with a tag saying what it lacks, never leave
        it RUNNING; unless the store itself is gone (a dead server: asking it would only retry)."""
        if self._remote and not server_reachable(self.uri):
            log.warning("MLflow run %s stays RUNNING in %s: the server is unreachable, so it cannot be ended", self.run_id, self.shown)
            return
        try:
            self.client.set_tag(self.run_id, TRACKING_ERROR_TAG, self._failure[:MAX_TAG_VALUE])
            self.client.set_terminated(self.run_id, "FAILED")
        except Exception as exc:  # noqa: BLE001 - tracking must never break a run
            log.warning("MLflow tracking (%s) could not end run %s: %s", self.shown, self.run_id, type(exc).__name__)

    def close(self, status: str = "FINISHED", end_time: int | None = None) -> None:
        """Flush and end the run with ``status`` (FINISHED, FAILED or KILLED), now or at ``end_time`` (ms); idempotent."""
        if self._closed:
            return
        if self._system is not None:
            self._system.stop()  # before the run ends: its last sample lands in a RUNNING run
        self.flush()
        if self.active:
            self._call("end the run", self.client.set_terminated, self.run_id, status if status in TERMINAL else "FINISHED", end_time)
        elif self._broken and self.run_id is not None:
            self._end_failed()
        self._closed = True
