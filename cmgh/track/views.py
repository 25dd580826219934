"""The experiment's default view in MLflow's UI: its pre-training runs with their downstream metrics.

MLflow keeps a runs table's columns, filter, order and grouping in the browser (URL and local
storage), and since 3.x also as *saved views*: experiment tags ``mlflow.sharedViewState.<id>``
holding ``{name, createdAt, updatedAt, state}`` (``state`` the view as JSON), listed under the runs
table's "Saved views" and opened by the link parameter ``viewStateShareKey=<id>`` (names read from the
installed UI's bundle; tests/track/test_store.py checks they are still there). cmgh saves one such view on its
experiment and `cmgh browse` links to it: a new user's first screen lists the pre-training runs with
each task's headline metric (:data:`cmgh.evaluate.HEADLINE_METRICS`, put on those runs by their
evaluations) and the final losses, every run shown in the charts. Import-light: no mlflow.
"""

from __future__ import annotations

import json
from typing import Any

from cmgh.track.names import headline_keys

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # read by the UI (mlflow/server/js: ExperimentKind; cmgh.track.ui)
EXPERIMENT_KIND = "custom_model_development"  # shown as "Machine learning"; the runs tab is its landing page
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
VIEW_ID = "cmgh-pretraining"  # the saved view's id: the tag's suffix and the link's viewStateShareKey
VIEW_NAME = "cmgh: pre-training runs with downstream metrics"
VIEW_TAG = VIEW_TAG_PREFIX + VIEW_ID
VIEW_PARAMETER = f"viewStateShareKey={VIEW_ID}"
RUN_FILTER = "tags.stage = 'pretrain'"
TRAINING_METRICS = ("loss_va", "loss_vt")  # MLflow shows a metric's value at its last step: the run's final losses


def column(kind: str, name: str) -> str:
    """A runs-table column as the UI names it (``metrics.`kinetics/top1```: makeCanonicalSortKey)."""
    return f"{kind}.`{name}`"


def view_state() -> dict[str, Any]:
    """The view: the search facets (filter, order) and the table's UI state the UI restores from it."""
    return {
        "searchFilter": RUN_FILTER,
        "orderByKey": column("tags", "mlflow.runName"),  # pretrain/<backbone>/<variant>/seed<n>: seeds of a variant together
        "orderByAsc": True,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        "selectedColumns": [
            column("tags", "variant"), column("tags", "seed"),
            *(column("metrics", key) for key in [*headline_keys(), *TRAINING_METRICS]),
        ],  # fmt: skip; the UI's default Source, Models and Dataset columns left out: the metrics fit the first screen
        "runsHiddenMode": "SHOW_ALL",  # the charts plot every pre-training run, not the 10 newest runs
    }


def saved_view(created_ms: int) -> str:
    """The tag value: the saved-view envelope around :func:`view_state`."""
    return json.dumps({"name": VIEW_NAME, "createdAt": created_ms, "updatedAt": created_ms, "state": json.dumps(view_state())})


def is_current(value: str | None) -> bool:
    """Whether an experiment's tag already holds this view (its state, whenever it was saved)."""
    try:
        held = json.loads(value or "")
        return held.get("name") == VIEW_NAME and json.loads(held["state"]) == view_state()
    except (ValueError, KeyError, TypeError, AttributeError):
        return False


def needs_saving(value: str | None) -> bool:
    """Whether cmgh (re)writes the view held in ``value``: none or no view there, or cmgh's own
    view of another cmgh version (saved as written: ``updatedAt == createdAt``). A view a user
    changed and saved in the UI (its ``updatedAt`` moved) stays theirs."""
    if is_current(value):
        return False
    try:
        held = json.loads(value or "")
    except ValueError:
        return True
    if not isinstance(held, dict) or not isinstance(held.get("state"), str):
        return True  # no saved view there
    return held.get("name") == VIEW_NAME and held.get("updatedAt") == held.get("createdAt")
