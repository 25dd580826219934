"""System metrics of a tracked run: MLflow's own monitors (CPU, memory, disk, network; GPU
utilization and memory through NVML when a GPU and ``nvidia-ml-py`` are there), logged as
``system/...`` metrics, as ``mlflow.start_run(log_system_metrics=True)`` does.

MLflow's :class:`~mlflow.system_metrics.system_metrics_monitor.SystemMetricsMonitor` collects and
publishes; the thread that drives it is ours, for three reasons: a run shorter than the sampling
interval still gets one sample (MLflow's loop publishes nothing then), stopping waits a bounded time
(MLflow's joins forever, and a dead server keeps its last request retrying for minutes), and any
failure is one warning that ends the sampling, never an exception in the run. Imports mlflow: only
:mod:`cmgh.track.mlflow_tracker` uses it.
"""

from __future__ import annotations

import logging
import threading
import time

from cmgh.io import redacted

log = logging.getLogger("cmgh.track")

SYSTEM_PREFIX = "system/"  # MLflow's prefix of the machine's metrics (not the model's)
STOP_TIMEOUT = 10.0  # seconds close() waits for the last sample to be written


class SystemMetrics:
    """Samples every ``interval`` seconds into run ``run_id`` until :meth:`stop`, which logs a last
    sample. ``resume`` continues the ``system/`` steps a resumed run already holds."""

    def __init__(self, uri: str, run_id: str, interval: float, resume: bool = False) -> None:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self.monitor = SystemMetricsMonitor(run_id, sampling_interval=interval, resume_logging=resume, tracking_uri=uri)
        self.interval = float(self.monitor.sampling_interval)  # MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL wins, as in MLflow
        self.cpu_seconds = 0.0  # CPU time the sampling thread used (what the tracking benchmark charges to it)
        self.samples = 0  # samples published
        self._final = True  # whether stopping logs a last sample (not once the run's store failed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="cmgh-system-metrics")
        self._thread.start()

    def _publish(self) -> None:
        self.monitor.publish_metrics(self.monitor.aggregate_metrics())
        self.samples += 1

    def _loop(self) -> None:
        try:
            while True:
                self.monitor.collect_metrics()
                if self._stop.wait(self.interval):
                    break
                self._publish()
                self.cpu_seconds = time.thread_time()
            if self._final:
                self.monitor.collect_metrics()  # the last one covers the end of the run
                self._publish()
                self.monitor.mlflow_logger.flush()
        except Exception as exc:  # noqa: BLE001 - system metrics must never break a run
            log.warning("MLflow system metrics stopped: %s: %s", type(exc).__name__, redacted(str(exc).splitlines()[0]) if str(exc) else "")
        finally:
            self.cpu_seconds = time.thread_time()

    def cancel(self) -> None:
        """Stop sampling without another write and without waiting (the run's store failed)."""
        self._final = False
        self._stop.set()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Log the last sample and end the thread (idempotent); gives up after ``timeout`` seconds
        (the daemon thread then dies with the process)."""
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("MLflow system metrics: the last sample was not written within %.0f s; left to the background", timeout)
