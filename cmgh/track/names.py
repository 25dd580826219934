"""cmgh's metric names as MLflow holds them. Import-light (no mlflow): the saved view and the
deferred evaluations name metrics without loading the adapter."""

from __future__ import annotations

import re

from cmgh.evaluate import HEADLINE_METRICS

_NOT_IN_A_NAME = re.compile(r"[^\w\-. :/]")  # MLflow allows alphanumerics, _ - . space : /


def metric_key(name: str) -> str:
    """A cmgh metric name (or a config key naming one, e.g. ``worlds.analysis.margins.t2v_R@10``) as
    MLflow accepts it: ``@`` dropped (``t2v_R@1`` -> ``t2v_R1``, the retrieval literature's other
    spelling), any other character MLflow refuses -> ``_``. The one mapping; metrics.json and the
    resolved config keep the cmgh names."""
    return _NOT_IN_A_NAME.sub("_", name.replace("@", ""))


def headline_keys() -> list[str]:
    """Each task's headline metric (:data:`cmgh.evaluate.HEADLINE_METRICS`) as an evaluation logs it
    (``msrvtt/t2v_R10``), in task order: the metrics an evaluation also puts on its pre-training run."""
    return [metric_key(f"{task}/{metric}") for task, metric in HEADLINE_METRICS.items()]
