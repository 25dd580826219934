"""Where a user looks at the tracked runs: MLflow's UI opened on the experiment's runs table.

MLflow 3's UI opens an experiment on its GenAI "Overview" page (traces, latency, token usage)
unless it is shown in the model-training workflow: the UI (3.17) takes the workflow from the
``workflowType`` query parameter (else the browser's last choice, GenAI by default), older 3.x UIs
from the experiment tag ``mlflow.experimentKind``. cmgh sets the tag on its experiment and prints a
link that carries the parameter, so either way the runs table is what a new user sees first.
"""

from __future__ import annotations

import sys
import urllib.parse
from pathlib import Path
from typing import Any

from cmgh.errors import ConfigError
from cmgh.track.store import is_remote, unreadable_sqlite
from cmgh.track.uri import artifact_root, redacted, sqlite_path, tracking_uri

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # read by the UI (mlflow/server/js: ExperimentKind)
EXPERIMENT_KIND = "custom_model_development"  # shown as "Machine learning"; the runs tab is its landing page
WORKFLOW = "workflowType=machine_learning"  # the UI's model-training view (the other value: genai)
UI_HOST, UI_PORT = "127.0.0.1", 5000  # `mlflow ui`'s defaults


def runs_url(base: str, experiment_id: str) -> str:
    """The runs table of an experiment in MLflow's UI at ``base`` (model-training view)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{WORKFLOW}"


def experiment_id(uri: str, name: str) -> str | None:
    """The id of experiment ``name`` in the store at ``uri`` (None when the store or experiment does
    not exist yet; a sqlite file is never created by asking)."""
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        return None
    why = unreadable_sqlite(db) if db is not None else None
    if why is not None:
        raise ConfigError(f"tracking.uri: {db} {why} (expected the sqlite file the runs were tracked in)")
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    return None if exp is None else str(exp.experiment_id)


def browse(cfg: Any, port: int = UI_PORT) -> list[str]:
    """How to open this config's runs: the ``mlflow ui`` command for a local store (none for a
    server) and the link to the experiment's runs table."""
    uri = tracking_uri(cfg)
    name = str(cfg.tracking.experiment or "") or str(cfg.name)
    found = experiment_id(uri, name)
    if found is None:
        raise ConfigError(f"tracking.uri: no experiment {name!r} in {redacted(uri)} yet; expected a tracked run first (make reproduce)")
    if is_remote(uri):
        parts = urllib.parse.urlsplit(uri)
        return [runs_url(urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])), found)]
    command = [str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri", uri]
    root = artifact_root(cfg, uri)
    if root is not None:
        command += ["--default-artifact-root", root]
    return [" ".join([*command, "--host", UI_HOST, "--port", str(port)]), runs_url(f"http://{UI_HOST}:{port}", found)]
