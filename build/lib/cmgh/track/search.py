"""Reading the tracking store back: the finished evaluation runs of an experiment, for the report's
`cmgh runs` table (:mod:`cmgh.report.from_store` turns them into tables; mlflow is imported lazily)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cmgh.errors import CmghError
from cmgh.io import redacted
from cmgh.track.store import unreadable_sqlite
from cmgh.track.uri import sqlite_path

EVALUATIONS = "tags.stage = 'evaluate' AND attributes.status = 'FINISHED'"


class StoreError(CmghError):
    """The tracking store cannot be read, or holds nothing to tabulate."""


@contextmanager
def _store(uri: str) -> Iterator[None]:
    """``mlflow.search_runs`` reads the global tracking URI: set it for the block, then put it back."""
    import mlflow

    shown = redacted(uri)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise StoreError(f"{shown}: no tracking store there (expected the sqlite file the runs were tracked in; set --tracking-uri or tracking.uri)")
    why = unreadable_sqlite(db) if db is not None else None
    if why is not None:
        raise StoreError(f"{db}: {why} (expected the sqlite file the runs were tracked in; set --tracking-uri or tracking.uri)")
    if uri.startswith(("http://", "https://")):
        from cmgh.track.store import server_reachable

        if not server_reachable(uri):
            raise StoreError(f"{shown}: no MLflow server answers (expected a running tracking server; check --tracking-uri or tracking.uri)")
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def evaluation_runs(uri: str, experiment: str, filter_string: str = "") -> list[Any]:
    """The finished evaluation runs of ``experiment`` in the store at ``uri`` (``filter_string``:
    an MLflow filter ANDed to it, e.g. ``tags.out LIKE '/scratch/results/%'``)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    query = EVALUATIONS + (f" AND {filter_string}" if filter_string.strip() else "")
    with _store(uri):
        try:
            if mlflow.get_experiment_by_name(experiment) is None:
                raise StoreError(f"{redacted(uri)}: no experiment {experiment!r} (expected the config's tracking.experiment or name; --set tracking.experiment=...)")
            return list(mlflow.search_runs(experiment_names=[experiment], filter_string=query, order_by=["attributes.start_time ASC"], output_format="list"))
        except MlflowException as exc:
            raise StoreError(f"{redacted(uri)}: search for {query!r} failed: {redacted(str(exc).splitlines()[0])}") from None
