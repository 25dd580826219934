"""The experiment's description in MLflow's UI (the experiment tag ``mlflow.note.content``, Markdown),
set from the report's front page once `cmgh report` has written it: a user opening the experiment
reads the headline table and where the report is, then how the runs are organised.

Asking never creates a store or an experiment (a tree tracked nowhere keeps none); mlflow is
imported only once the experiment is known to exist.
"""

from __future__ import annotations

from typing import Any

from cmgh.track import experiment_name
from cmgh.track.store import is_remote, server_reachable, store_lock
from cmgh.track.ui import experiment_id
from cmgh.track.uri import redacted, tracking_uri

MAX_DESCRIPTION = 20000  # MLflow's limit on an experiment tag's value (MAX_EXPERIMENT_TAG_VAL_LENGTH)
RUNS_HEADING = "## The runs"


def describe(cfg: Any, markdown: str) -> str | None:
    """Set ``cfg``'s experiment description to ``markdown`` followed by how its runs are organised;
    None when set, else why not (one line). Store errors propagate (the caller only warns)."""
    if not bool(cfg.tracking.enabled):
        return "tracking.enabled is false"
    uri = tracking_uri(cfg)
    if is_remote(uri) and not server_reachable(uri):
        return f"{redacted(uri)}: no tracking server answers"
    name = experiment_name(cfg)
    found = experiment_id(uri, name)
    if found is None:
        return f"no experiment {name!r} in {redacted(uri)} (nothing tracked there yet)"
    from mlflow.tracking import MlflowClient

    from cmgh.track.mlflow_tracker import DESCRIPTION_TAG, experiment_description

    text = f"{markdown.rstrip()}\n\n{RUNS_HEADING}\n\n{experiment_description(name)}\n"
    if len(text) > MAX_DESCRIPTION:
        note = "\n\n(cut at MLflow's limit on a description: the whole page is the report's `landing.md`)\n"
        text = text[: MAX_DESCRIPTION - len(note)] + note
    with store_lock(uri):
        MlflowClient(tracking_uri=uri).set_experiment_tag(found, DESCRIPTION_TAG, text)
    return None
