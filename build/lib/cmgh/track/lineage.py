"""MLflow 3 lineage of a run, for :class:`cmgh.track.mlflow_tracker.MlflowTracker`: the datasets it
read as run inputs, and a finished pre-training run's checkpoint as a ``LoggedModel``.

Both go through ``MlflowClient`` (no fluent global state). A dataset is a
:class:`~mlflow.data.meta_dataset.MetaDataset` (name, digest, source path: nothing is loaded); a
checkpoint is an external model, as ``mlflow.create_external_model`` makes one: the weights stay
in the run folder and the model holds an ``MLmodel`` file only, unless asked to hold the weights too.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import DatasetInput, InputTag, LoggedModelOutput, Metric
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_MODEL_IS_EXTERNAL

from cmgh.io import sha256_file
from cmgh.tracking import DatasetRef
from cmgh.track.system import SYSTEM_PREFIX

MODEL_TAG = "cmgh.model_id"  # on a pre-training run: the LoggedModel of its checkpoint (evaluations link to it)
CHECKPOINT_TAG = "cmgh.checkpoint"  # on a LoggedModel: where its weights are
MODEL_TYPE = "cmgh-encoder"
InputKey = tuple[str, str, str]  # name, digest, context


def model_name(text: str) -> str:
    """A LoggedModel name MLflow accepts (no ``/ : . % " '``): ``ms-gr-seed0``."""
    return re.sub(r"[/:.%\"'\s]+", "-", text).strip("-") or "model"


def held_inputs(run: Any) -> set[InputKey]:
    """The datasets a run already lists as inputs (a resumed run logs only what is new)."""
    held = set()
    for item in getattr(run.inputs, "dataset_inputs", None) or ():
        context = next((t.value for t in item.tags if t.key == MLFLOW_DATASET_CONTEXT), "")
        held.add((item.dataset.name, item.dataset.digest, context))
    return held


def dataset_inputs(refs: Iterable[DatasetRef]) -> list[DatasetInput]:
    """MLflow inputs of ``refs``: metadata-only datasets whose source is the local feature folder."""
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json
    from mlflow.data.meta_dataset import MetaDataset

    inputs = []
    for ref in refs:
        source = get_dataset_source_from_json(json.dumps({"uri": ref.source}), "local")
        dataset = MetaDataset(source, name=ref.name, digest=ref.digest)
        tags = [InputTag(key, str(value)) for key, value in ref.tags.items()]
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[*tags, InputTag(MLFLOW_DATASET_CONTEXT, ref.context)]))
    return inputs


def final_metrics(client: MlflowClient, run_id: str) -> list[Metric]:
    """Each metric's last value in the run, with its own step and timestamp (re-logging it with a
    model id then adds no second point to the run's history). The machine's ``system/`` samples
    are the run's, not the model's: they are left out."""
    last = []
    for key in client.get_run(run_id).data.metrics:
        if key.startswith(SYSTEM_PREFIX):
            continue
        history = client.get_metric_history(run_id, key)
        if history:
            last.append(max(history, key=lambda m: (m.step, m.timestamp)))
    return last


def log_model(
    client: MlflowClient,
    experiment_id: str,
    run_id: str,
    checkpoint: Path,
    *,
    name: str,
    tags: Mapping[str, Any],
    params: Mapping[str, Any],
    weights: bool,
) -> str:
    """Create the READY LoggedModel of ``checkpoint``, sourced from ``run_id``, holding the run's
    final metrics and listed among the run's outputs; returns its id."""
    from mlflow.models import Model

    checkpoint = checkpoint.resolve()
    all_tags = {
        **{k: str(v) for k, v in tags.items()}, CHECKPOINT_TAG: str(checkpoint), "checkpoint_sha256": sha256_file(checkpoint),
        MLFLOW_MODEL_IS_EXTERNAL: str(not weights).lower(),
    }  # fmt: skip
    model = client.create_logged_model(
        experiment_id, name=model_name(name), source_run_id=run_id, tags=all_tags,
        params={k: str(v) for k, v in params.items()}, model_type=MODEL_TYPE,
    )  # fmt: skip
    spec = Model(
        artifact_path=model.artifact_location, model_uuid=model.model_id, model_id=model.model_id, run_id=run_id,
        metadata={MLFLOW_MODEL_IS_EXTERNAL: not weights, CHECKPOINT_TAG: str(checkpoint)},
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        spec.save(str(Path(tmp) / "MLmodel"))
        client.log_model_artifacts(model.model_id, tmp)
    if weights:
        client.log_model_artifact(model.model_id, str(checkpoint))
    metrics = final_metrics(client, run_id)
    linked = [Metric(m.key, m.value, m.timestamp, m.step, model_id=model.model_id) for m in metrics]
    for start in range(0, len(linked), 1000):
        client.log_batch(run_id, metrics=linked[start : start + 1000], synchronous=True)
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, max((m.step for m in metrics), default=0))])
    client.finalize_logged_model(model.model_id, "READY")
    return str(model.model_id)


def new_inputs(refs: Sequence[DatasetRef], held: set[InputKey]) -> list[DatasetRef]:
    """The refs a run does not list yet, each once."""
    fresh: dict[InputKey, DatasetRef] = {}
    for ref in refs:
        key = (ref.name, ref.digest, ref.context)
        if key not in held:
            fresh.setdefault(key, ref)
    return list(fresh.values())
