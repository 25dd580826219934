"""`cmgh runs`: the report's ablation table read from the tracking store instead of the results
folder, so runs tracked on a remote server can be compared from any machine (the report reads the
store; the adapter that writes it, :mod:`cmgh.track`, knows nothing of the report).

The evaluation runs of the config's experiment (:func:`cmgh.track.search.evaluation_runs`: tag
``stage`` = ``evaluate``, status FINISHED) become the long table :func:`cmgh.report.collect.collect` reads
from ``metrics.json`` files (task, backbone, variant, seed from the runs' tags; each ``<task>/<metric>``
metric), and the report's own :func:`~cmgh.report.tables.ablation` makes the table, so the rows,
columns and numbers are those of ``tables/ablation.csv``. Metric names are looked up the way the
tracker wrote them (:func:`~cmgh.track.mlflow_tracker.metric_key`). The report imports no mlflow:
the query is the adapter's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pandas as pd

from cmgh import layout
from cmgh.errors import ConfigError
from cmgh.io import atomic_write_text, redacted
from cmgh.report.collect import variant_order
from cmgh.report.columns import ABLATION_COLUMNS, Column
from cmgh.report.tables import ablation, ablation_csv, ablation_markdown
from cmgh.track import OUT_TAG, experiment_name, tracking_uri
from cmgh.track.search import StoreError, evaluation_runs
from cmgh.track.uri import resolve_sqlite

IDENTITY = ("task", "backbone", "variant", "seed")  # the tags that place an evaluation run in the table


def long_table(runs: Sequence[Any]) -> pd.DataFrame:
    """``task, backbone, variant, seed, metric, value`` as :func:`cmgh.report.collect.collect` gives
    it, ``metric`` spelled as MLflow holds it. Of runs of one evaluation in the same folder the newest
    counts (what that folder's metrics.json holds); the same evaluation in two folders is refused."""
    newest: dict[tuple[str, ...], Any] = {}
    folders: dict[tuple[str, ...], str] = {}
    for run in runs:  # oldest first
        tags = run.data.tags
        if any(k not in tags for k in IDENTITY):
            continue
        key = tuple(str(tags[k]) for k in IDENTITY)
        out = tags.get(OUT_TAG, "")
        if key in folders and folders[key] != out:
            task, backbone, variant, seed = key
            raise StoreError(
                f"{layout.eval_key(task, backbone, variant, seed)} was tracked from two folders ({folders[key]} and {out}); "
                f"expected one results tree: narrow the runs with --filter \"tags.{OUT_TAG} LIKE '<results folder>/%'\""
            )
        folders[key], newest[key] = out, run
    rows = []
    for (task, backbone, variant, seed), run in newest.items():
        try:
            number = int(seed)
        except ValueError:
            continue
        prefix = f"{task}/"
        for name, value in run.data.metrics.items():
            if name.startswith(prefix):
                rows.append({"task": task, "backbone": backbone, "variant": variant, "seed": number, "metric": name[len(prefix):], "value": float(value)})
    return pd.DataFrame(rows, columns=["task", "backbone", "variant", "seed", "metric", "value"])


def tracked_columns(columns: Sequence[Column] = ABLATION_COLUMNS) -> list[Column]:
    """The report's columns with their metrics named as the tracker logged them (``t2v_R@1`` -> ``t2v_R1``)."""
    from cmgh.track.mlflow_tracker import metric_key

    return [dataclasses.replace(c, metric=metric_key(c.metric)) for c in columns]


def tracked_ablation(cfg: Any, uri: str | None = None, filter_string: str = "") -> pd.DataFrame:
    """The ablation table (:func:`cmgh.report.tables.ablation`) of the config's experiment, read
    from the store at ``uri`` (default: the config's, :func:`cmgh.track.tracking_uri`); rows in the
    config's variant order."""
    store = resolve_sqlite(uri) if uri else tracking_uri(cfg)
    experiment = experiment_name(cfg)
    long = long_table(evaluation_runs(store, experiment, filter_string))
    if long.empty:
        where = f" matching {filter_string!r}" if filter_string.strip() else ""
        raise StoreError(f"{redacted(store)}: experiment {experiment!r} has no finished evaluation run{where} (expected runs tagged stage=evaluate)")
    variants = cfg.to_dict().get("variants") or {}
    return ablation(long, tracked_columns(), order=variant_order(long["variant"].unique(), list(variants)))


def output_format(path: str) -> str:
    """``csv`` or ``md`` from an output file name (anything else is a user error)."""
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if suffix not in ("csv", "md"):
        raise ConfigError(f"--out {path}: expected a .csv or .md file")
    return suffix


def runs_table(cfg: Any, uri: str | None = None, filter_string: str = "", out: str | None = None) -> str:
    """What ``cmgh runs`` prints: the table as Markdown, or with ``out`` the path it was written to
    (atomically; ``.csv`` as ``tables/ablation.csv``, ``.md`` as ``tables/ablation.md``)."""
    fmt = output_format(out) if out else "md"
    table = tracked_ablation(cfg, uri, filter_string)
    text = ablation_csv(table) if fmt == "csv" else ablation_markdown(table)
    return f"{atomic_write_text(out, text)}\n" if out else text
