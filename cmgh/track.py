"""Experiment tracking behind a small protocol: no-op by default, MLflow when it is installed.

The core library only ever sees :class:`Tracker`; the MLflow adapter lives here, at the edge,
and tracking failures (server down, disk full) are logged as warnings, never raised into a run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Tracker(Protocol):
    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: str | Path) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def close(self) -> None: ...


class NullTracker:
    """Tracks nothing: the default, so the core runs without any tracking backend."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | Path) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def close(self) -> None:
        pass
