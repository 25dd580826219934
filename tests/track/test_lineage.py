"""MLflow 3 lineage on a real sqlite store: the datasets a run read (run inputs), and a finished
checkpoint as a LoggedModel holding the run's final metrics and its evaluations' metrics."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cmgh import cli
from cmgh import config as config_mod
from cmgh import layout
from cmgh.tracking import dataset_digest
from tests.helpers import mlflow_store
from tests.track.tracked_runs import cli_pretrain, config_file, runs_of

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402


pytestmark = pytest.mark.usefixtures("no_tracking_env")


def inputs_of(run: object) -> list[tuple[str, str, str, str]]:
    """(name, digest, context, source uri) of each dataset input of a run."""
    found = []
    for item in run.inputs.dataset_inputs:
        context = {t.key: t.value for t in item.tags}["mlflow.data.context"]
        source = mlflow.data.get_source(item)
        found.append((item.dataset.name, item.dataset.digest, context, source.uri))
    return sorted(found)


def cli_evaluate(cfg_file: Path, checkpoint: Path, out: Path, *sets: str) -> None:
    args = ["evaluate", "--config", str(cfg_file), "--task", "kinetics", "--checkpoint", str(checkpoint), "--out", str(out)]
    assert cli.main([*args, *(a for s in [*sets, "evaluate.batch_size=8"] for a in ("--set", s))]) == 0


def test_runs_record_their_datasets_and_a_finished_checkpoint_is_a_logged_model(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    uri = mlflow_store(tmp_path / "mlflow.db")
    artifacts = tmp_path / "mlruns"
    store = [f"tracking.uri={uri}", f"tracking.artifacts={artifacts}"]
    cfg_file = config_file(tiny_world, tmp_path)
    features = tiny_world.path("features")
    out = tmp_path / "gr"
    cli_pretrain(cfg_file, out, "gr", 0, *store)
    cli_evaluate(cfg_file, out, tmp_path / "eval", *store)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(tiny_world.name).experiment_id

    # The pre-training run lists its corpus, the evaluation the set it scores on: name, digest, context, folder.
    (run,) = runs_of(client, tiny_world.name, "tags.stage = 'pretrain'")
    corpus = layout.corpus_dir(features, "howto100m", config_mod.corpus_format(tiny_world, "howto100m"))
    howto = ("howto100m", dataset_digest(corpus), "training", str(corpus.resolve()))
    assert inputs_of(run) == [howto]
    (evaluation,) = runs_of(client, tiny_world.name, "tags.stage = 'evaluate'")
    kinetics_dir = layout.feature_dir(features, "kinetics")
    kinetics = ("kinetics", dataset_digest(kinetics_dir), "evaluation", str(kinetics_dir.resolve()))
    assert inputs_of(evaluation) == [kinetics]
    assert len({howto[1], kinetics[1]}) == 2 and len(howto[1]) == 16

    # The finished checkpoint is one READY external model of the run, found by search_logged_models,
    # with the run's final metrics and the evaluation's metrics (on the kinetics dataset).
    (model,) = client.search_logged_models([experiment], filter_string="tags.variant = 'gr' AND tags.backbone = 'ms'")
    assert (model.name, model.source_run_id, str(model.status), model.model_type) == ("ms-gr-seed0", run.info.run_id, "READY", "cmgh-encoder")
    checkpoint = out / layout.CHECKPOINT
    assert model.tags["cmgh.checkpoint"] == str(checkpoint.resolve()) and model.tags["mlflow.model.isExternal"] == "true"
    assert (model.params["backbone"], model.params["variant"], model.params["seed"]) == ("ms", "gr", "0")
    assert model.params["model.width"] == "32"
    assert client.get_run(run.info.run_id).data.tags["cmgh.model_id"] == model.model_id
    by_key = {m.key: m for m in model.metrics}
    final = {k: v for k, v in client.get_run(run.info.run_id).data.metrics.items() if not k.startswith("system/")}
    assert {k: by_key[k].value for k in final} == pytest.approx(final)
    assert not [k for k in by_key if k.startswith("system/")]  # the machine's samples stay the run's
    assert by_key["loss"].step == 5 and by_key["loss"].run_id == run.info.run_id
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(6))  # not logged twice
    evaluated = {k: m for k, m in by_key.items() if k.startswith("kinetics/")}
    assert evaluated and {(m.run_id, m.dataset_name, m.dataset_digest) for m in evaluated.values()} == {
        (evaluation.info.run_id, "kinetics", kinetics[1])
    }
    assert evaluated.keys() == {k for k in evaluation.data.metrics if k.startswith("kinetics/")}
    best = client.search_logged_models(
        [experiment], order_by=[{"field_name": "metrics.kinetics/top1", "ascending": False, "dataset_name": "kinetics"}], max_results=1
    )
    assert [m.model_id for m in best] == [model.model_id]

    # The weights stay where they are: the model holds its MLmodel file, the store no checkpoint.
    assert [a.path for a in client.list_logged_model_artifacts(model.model_id)] == ["MLmodel"]
    assert not list(artifacts.rglob("*.pt"))

    # The same job again: no second input, no second model.
    cli_pretrain(cfg_file, out, "gr", 0, *store)
    assert inputs_of(client.get_run(run.info.run_id)) == [howto]
    assert len(client.search_logged_models([experiment])) == 1

    # Asked for the weights, the model holds a copy of checkpoint.pt.
    heavy = tmp_path / "heavy"
    cli_pretrain(cfg_file, heavy, "gr", 1, *store, "tracking.log_model_weights=true")
    (copy,) = client.search_logged_models([experiment], filter_string="tags.seed = '1'")
    assert sorted(a.path for a in client.list_logged_model_artifacts(copy.model_id)) == ["MLmodel", layout.CHECKPOINT]
    assert copy.tags["mlflow.model.isExternal"] == "false"

    # A changed dataset shows another digest: Kinetics with one training clip fewer in its
    # annotations, extracted into a copy of the feature tree, then the same checkpoint evaluated on it.
    from cmgh.data.extract import decoded as extraction

    data, changed = tmp_path / "data", tmp_path / "features"
    shutil.copytree(tiny_world.path("data"), data)
    shutil.copytree(features, changed)
    train_csv = layout.kinetics_split_csv(data, "train")
    train_csv.write_text("".join(train_csv.read_text().splitlines(keepends=True)[:-1]))
    extraction.extract(config_mod.with_overrides(tiny_world, [f"paths.data={data}", f"paths.features={changed}"]), "kinetics")
    fewer = dataset_digest(layout.feature_dir(changed, "kinetics"))
    assert fewer != kinetics[1]
    cli_evaluate(cfg_file, out, tmp_path / "eval_fewer", *store, f"paths.features={changed}")
    (again,) = runs_of(client, tiny_world.name, f"tags.out = '{(tmp_path / 'eval_fewer').resolve()}'")
    assert [(name, digest) for name, digest, *_ in inputs_of(again)] == [("kinetics", fewer)]
    assert inputs_of(client.get_run(evaluation.info.run_id)) == [kinetics]
