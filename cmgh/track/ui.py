"""Where a user looks at the tracked runs: MLflow's UI opened on the experiment's runs table.

MLflow 3's UI opens an experiment on its GenAI "Overview" page (traces, latency, token usage)
unless it is shown in the model-training workflow: the UI (3.17) takes the workflow from the
``workflowType`` query parameter (else the browser's last choice, GenAI by default), older 3.x UIs
from the experiment tag ``mlflow.experimentKind``. cmgh sets the tag on its experiment and prints a
link that carries the parameter, so either way the runs table is what a new user sees first. The
link also opens the experiment's saved view (:mod:`cmgh.track.views`): its pre-training runs with
each task's headline metric.
"""

from __future__ import annotations

import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from cmgh.errors import ConfigError
from cmgh.track import views
from cmgh.track.views import EXPERIMENT_KIND as EXPERIMENT_KIND, EXPERIMENT_KIND_TAG as EXPERIMENT_KIND_TAG  # re-exported
from cmgh.track.store import is_remote, store_lock, unreadable_sqlite
from cmgh.track.uri import artifact_root, redacted, sqlite_path, tracking_uri

WORKFLOW = "workflowType=machine_learning"  # the UI's model-training view (the other value: genai)
UI_HOST, UI_PORT = "127.0.0.1", 5000  # `mlflow ui`'s defaults


def runs_url(base: str, experiment_id: str, view: bool = True) -> str:
    """The runs table of an experiment in MLflow's UI at ``base`` (model-training view), opened on
    cmgh's saved view (``view``; the experiment must hold it: :func:`save_view`)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{WORKFLOW}" + (f"&{views.VIEW_PARAMETER}" if view else "")


def save_view(uri: str, experiment_id: str) -> bool:
    """Make sure the experiment holds cmgh's saved view (an experiment tracked by an older cmgh has
    none); whether it does. A store that refuses the write leaves the plain runs table."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    if not views.needs_saving(client.get_experiment(experiment_id).tags.get(views.VIEW_TAG)):
        return True
    try:
        with store_lock(uri):
            client.set_experiment_tag(experiment_id, views.VIEW_TAG, views.saved_view(int(time.time() * 1000)))
    except Exception:  # noqa: BLE001 - a read-only store: the link without the view still works
        return False
    return True


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
    server) and the link to the experiment's runs table, on cmgh's saved view. Evaluations the
    workflow recorded but has not logged yet (:mod:`cmgh.track.deferred`) are logged first."""
    from cmgh.track.deferred import pending, sync

    uri = tracking_uri(cfg)
    name = str(cfg.tracking.experiment or "") or str(cfg.name)
    if pending(uri) and bool(cfg.tracking.enabled):
        sync(uri)
    found = experiment_id(uri, name)
    if found is None:
        raise ConfigError(f"tracking.uri: no experiment {name!r} in {redacted(uri)} yet; expected a tracked run first (make reproduce)")
    view = save_view(uri, found)
    if is_remote(uri):
        parts = urllib.parse.urlsplit(uri)
        return [runs_url(urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])), found, view)]
    command = [str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri", uri]
    root = artifact_root(cfg, uri)
    if root is not None:
        command += ["--default-artifact-root", root]
    return [" ".join([*command, "--host", UI_HOST, "--port", str(port)]), runs_url(f"http://{UI_HOST}:{port}", found, view)]
