"""Noise detection over training: ground-truth join, AUROC and AP per indicator, target and step
window, and the per-run evaluation step (`cmgh evaluate --task noise_training`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmgh import cli
from cmgh import config as config_mod
from cmgh import layout
from cmgh.data.datasets import noise_labels
from cmgh.errors import ConfigError, DataError
from cmgh.evaluate import TARGETS
from cmgh.evaluate import TRAINING_INDICATORS as INDICATORS
from cmgh.evaluate.noise_truth import label_clips
from cmgh.evaluate.run import evaluate_run
from cmgh.evaluate.detection_over_training import COLUMNS, default_window, over_training, read_scores, series, window_size
from cmgh.train.loop import RunSpec, pretrain
from tests.evaluate.score_dumps import EXPECTED, world_config, write_run, write_world
from tests.helpers import REPO, mlflow_store

TASK = "noise_training"


def _value(table: pd.DataFrame, indicator: str, target: str, step: int, column: str) -> float:
    (value,) = table[(table.indicator == indicator) & (table.target == target) & (table.step == step)][column]
    return float(value)


# --------------------------------------------------------------------------- hand-computed tables


def test_auroc_and_ap_per_target_and_window_match_the_hand_computed_values(tmp_path: Path) -> None:
    cfg = world_config(tmp_path)
    write_world(cfg)
    run = write_run(cfg)
    table = over_training(run, cfg.path("data"), cfg.path("features"), window=2)
    assert list(table.columns) == COLUMNS
    assert len(table) == 2 * len(TARGETS) * len(INDICATORS)  # windows x targets x indicators, one corpus
    for (target, step), (auroc, ap) in EXPECTED.items():
        for indicator in ("loss_va", "cos_meeting_point", "loss_total"):  # -cos and loss_va + loss_vt rank as loss_va does
            assert _value(table, indicator, target, step, "auroc") == pytest.approx(auroc, nan_ok=True), (indicator, target, step)
            assert _value(table, indicator, target, step, "ap") == pytest.approx(ap, nan_ok=True), (indicator, target, step)
    assert _value(table, "cos_representation", "audio", 0, "auroc") == pytest.approx(0.25)  # +loss_va as a cosine: flipped
    assert _value(table, "loss_vt", "either", 0, "auroc") == pytest.approx(0.5)  # constant: every pair a tie
    rows = table.drop_duplicates(["target", "step"]).set_index(["target", "step"])
    assert rows["step_to"].to_dict() == {(t, 0): 1 for t in TARGETS} | {(t, 2): 3 for t in TARGETS}
    assert rows["n"].to_dict() == {(t, 0): 8 for t in TARGETS} | {(t, 2): 6 for t in TARGETS}
    assert rows["n_noisy"].to_dict() == {("audio", 0): 2, ("text", 0): 2, ("either", 0): 4, ("audio", 2): 2, ("text", 2): 0, ("either", 2): 2}

    whole = over_training(run, cfg.path("data"), cfg.path("features"), window=4)  # one window: all 14 triplets
    assert set(whole["step"]) == {0} and set(whole["step_to"]) == {3} and set(whole["n"]) == {14}


def test_series_puts_each_window_at_its_last_step_and_leaves_undefined_values_out(tmp_path: Path) -> None:
    cfg = world_config(tmp_path)
    write_world(cfg)
    steps = series(over_training(write_run(cfg), cfg.path("data"), cfg.path("features"), window=2))
    assert list(steps) == [1, 3]
    assert steps[1]["howto100m/auroc/loss_va/audio"] == pytest.approx(0.75) and steps[1]["howto100m/ap/loss_va/either"] == pytest.approx(0.65)
    assert steps[3]["howto100m/auroc/loss_va/audio"] == pytest.approx(1.0)
    assert "howto100m/auroc/loss_va/text" in steps[1] and not any("/text" in name for name in steps[3])  # NaN: no misaligned text


def test_default_window_is_a_fifth_of_the_run_in_whole_dump_intervals(tmp_path: Path) -> None:
    default = config_mod.load()
    assert default_window(default.to_dict()) == 30  # 150 steps, a dump every step
    paper = config_mod.load(REPO / "config" / "paper.yaml")
    assert default_window(paper.to_dict()) == 100_000  # 500k steps, a dump every 10k
    assert default_window({"pretrain": {"steps": 6, "score_every": 4}}) == 4
    assert default_window({"pretrain": {"steps": 3, "score_every": 1}}) == 1
    assert window_size(default) == 30 and window_size(world_config(tmp_path)) == 2  # evaluate.noise_training.window decides when set
    with pytest.raises(ConfigError, match="evaluate.noise_training.window: 0 is less than the minimum of 1"):
        config_mod.with_overrides(default, ["evaluate.noise_training.window=0"])


# --------------------------------------------------------------------------- the evaluation step


def test_the_step_writes_the_windows_and_the_final_values(tmp_path: Path) -> None:
    cfg = world_config(tmp_path)
    write_world(cfg)
    run = write_run(cfg)
    payload = evaluate_run(cfg, TASK, run)
    out = layout.eval_dir(cfg.path("results"), TASK, "ms", "baseline", 0)
    assert json.loads((out / layout.METRICS).read_text()) == payload
    windows = pd.read_csv(out / layout.NOISE_WINDOWS)
    assert len(windows) == 2 * len(TARGETS) * len(INDICATORS) and set(windows["step_to"]) == {1, 3}
    # metrics.json: each value at its last window (text's last defined window is the first)
    assert payload["howto100m/auroc/loss_va/audio"] == pytest.approx(1.0) and payload["howto100m/ap/loss_va/either"] == pytest.approx(1.0)
    assert payload["howto100m/auroc/loss_va/text"] == pytest.approx(0.25)
    assert payload["meta"]["task"] == TASK and payload["meta"]["seed"] == 0 and payload["meta"]["run"] == str(run.resolve())
    params = payload["params"]
    assert params["window"] == 2 and params["corpora"] == ["howto100m"] and params["windows"] == 2 and params["n_scored"] == 14
    assert "skipped" not in params and (out / layout.CONFIG).is_file()


def test_a_run_without_dumps_or_ground_truth_is_skipped_with_its_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = world_config(tmp_path)
    write_world(cfg)
    bare = write_run(cfg, dumps=False)
    payload = evaluate_run(cfg, TASK, bare)
    assert payload["params"]["skipped"] == f"no score dumps in {bare / layout.SCORES_DIR} (pretrain.score_every)"
    out = layout.eval_dir(cfg.path("results"), TASK, "ms", "baseline", 0)
    assert pd.read_csv(out / layout.NOISE_WINDOWS).empty and not any("/" in k for k in payload if k not in ("meta", "params", "timing"))

    run = write_run(cfg, seed=1)
    layout.noise_labels(cfg.path("data"), "howto100m").unlink()
    config_file = tmp_path / "job.yaml"
    config_file.write_text(cfg.to_yaml())
    assert cli.main(["evaluate", "--config", str(config_file), "--task", TASK, "--checkpoint", str(run)]) == 0
    printed = capsys.readouterr().out
    assert f"{TASK} ms/baseline/seed1: skipped: none of its corpora (howto100m) has a ground truth (noise_labels.csv" in printed
    skipped = json.loads(layout.eval_metrics(cfg.path("results"), TASK, "ms", "baseline", 1).read_text())["params"]["skipped"]
    assert skipped.startswith("none of its corpora (howto100m) has a ground truth")


def test_bad_dumps_and_arguments_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = world_config(tmp_path)
    write_world(cfg)
    run = write_run(cfg)
    dump = layout.scores_file(run, 1)
    original = pd.read_csv(dump)
    original.drop(columns=["loss_va"]).to_csv(dump, index=False)
    with pytest.raises(DataError, match=rf"^{dump}: no column loss_va \(expected a score dump of cmgh pretrain"):
        evaluate_run(cfg, TASK, run)
    original.assign(cos=["0.1", "x", "0.3", "0.4"]).to_csv(dump, index=False)
    with pytest.raises(DataError, match=rf"^{dump}: column cos, row 2: 'x' is not a finite number$"):
        read_scores(run)
    with pytest.raises(DataError, match="summary.json: not found"):
        evaluate_run(cfg, TASK, tmp_path / "nowhere")

    config_file = tmp_path / "job.yaml"
    config_file.write_text(cfg.to_yaml())
    assert cli.main(["evaluate", "--config", str(config_file), "--task", TASK, "--checkpoint", str(run), "--random-init"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a random init has no training" in err


@pytest.mark.usefixtures("no_tracking_env")
def test_the_step_is_tracked_over_training_steps_under_its_pretraining_run(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from mlflow.utils.validation import _validate_metric_name

    from cmgh.track import open_tracker
    from cmgh.track.mlflow_tracker import metric_key

    uri = mlflow_store(tmp_path / "mlflow.db")
    cfg = world_config(tmp_path, "tracking.enabled=true", f"tracking.uri={uri}", "tracking.experiment=noise_training",
                       "tracking.system_metrics=false")
    write_world(cfg)
    run = write_run(cfg)
    with open_tracker(cfg, layout.run_key("ms", "baseline", 0), {"variant": "baseline"}, stage="pretrain", out=run) as parent:
        pass
    config_file = tmp_path / "job.yaml"
    config_file.write_text(cfg.to_yaml(masked=False))
    command = ["evaluate", "--config", str(config_file), "--task", TASK, "--checkpoint", str(run)]
    assert cli.main(command) == 0
    assert cli.main(command) == 0  # a rerun of the job reuses its run and logs no step twice

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("noise_training")
    (tracked,) = client.search_runs([experiment.experiment_id], filter_string="tags.stage = 'evaluate'")
    assert tracked.info.status == "FINISHED" and tracked.data.tags["mlflow.parentRunId"] == parent.run_id
    assert tracked.data.tags["task"] == TASK and tracked.data.tags["variant"] == "baseline"

    def history(name: str) -> list[tuple[int, float]]:
        return [(m.step, round(m.value, 9)) for m in sorted(client.get_metric_history(tracked.info.run_id, name), key=lambda m: m.step)]

    assert history(f"{TASK}/howto100m/auroc/loss_va/audio") == [(1, 0.75), (3, 1.0)]
    assert history(f"{TASK}/howto100m/ap/loss_va/either") == [(1, 0.65), (3, 1.0)]
    assert history(f"{TASK}/howto100m/auroc/loss_va/text") == [(1, 0.25)]  # no misaligned text in steps 2-3: no value
    written = json.loads(layout.eval_metrics(cfg.path("results"), TASK, "ms", "baseline", 0).read_text())
    final = {f"{TASK}/{k}": v for k, v in written.items() if isinstance(v, float)}
    assert final and tracked.data.metrics == pytest.approx(final)  # the latest value of each is metrics.json's
    for name in tracked.data.metrics:
        _validate_metric_name(name)
        assert metric_key(name) == name  # legal as written: metrics.json and MLflow spell it alike
    (scored,) = client.get_run(tracked.info.run_id).inputs.dataset_inputs  # the corpus it scored, as the run read it
    assert scored.dataset.name == "howto100m" and {t.key: t.value for t in scored.tags}["mlflow.data.context"] == "evaluation"


# --------------------------------------------------------------------------- real runs of the tiny world


def test_clips_take_the_label_of_the_segment_they_fall_in(tiny_world: config_mod.Config) -> None:
    index = pd.read_parquet(tiny_world.path("features") / "howto100m" / "index.parquet")
    noise = noise_labels.read_noise_labels(tiny_world.path("data") / "howto100m" / "noise_labels.csv")
    truth = label_clips(index, noise).set_index("item_id")
    assert len(truth) == len(index)
    for row in index.itertuples():
        seg = noise[(noise.video_id == row.video_id) & (noise.clip_start <= row.clip_start + 1e-6) & (noise.clip_end > row.clip_start + 1e-6)]
        assert len(seg) == 1
        assert truth.at[row.item_id, "audio"] == 1 - seg.audio_aligned.iloc[0]
        assert truth.at[row.item_id, "text"] == 1 - seg.text_aligned.iloc[0]
    rates = tiny_world.data.noise
    assert abs(truth["audio"].mean() - rates.audio_rate) < 0.05 and abs(truth["text"].mean() - rates.text_rate) < 0.05


def test_over_training_reads_real_dumps(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    cfg = config_mod.with_overrides(
        tiny_world,
        ["pretrain.batch_size=8", "pretrain.steps=6", "pretrain.score_every=1", "model.width=32", "model.heads=2", "model.depth=1",
         "variants.probe={pretrain: {harmonize: {meeting_point: parameters}}}"],
    )
    run = tmp_path / "run"
    pretrain(cfg, RunSpec("ms", "probe", 0, run))
    table = over_training(run, cfg.path("data"), cfg.path("features"), window=3)
    assert sorted(set(table["step"])) == [0, 3] and set(table["step_to"]) == {2, 5}
    assert (table["n"] == 24).all()  # 3 steps x batch 8 = one epoch of the 24 tiny clips
    values = table[["auroc", "ap"]].to_numpy(dtype=float)
    assert np.all(np.isnan(values) | ((values >= 0) & (values <= 1)))
    assert set(table["indicator"]) == set(INDICATORS) and set(table["target"]) == set(TARGETS)

    # An oracle score (the ground truth itself) must give AUROC and AP 1: the join and direction are right.
    index = pd.read_parquet(cfg.path("features") / "howto100m" / "index.parquet")
    truth = label_clips(index, noise_labels.read_noise_labels(cfg.path("data") / "howto100m" / "noise_labels.csv")).set_index("item_id")
    for dump in (run / "scores").glob("step_*.csv"):
        scores = pd.read_csv(dump)
        scores["loss_va"] = truth.loc[scores["item_id"], "audio"].to_numpy()
        scores.to_csv(dump, index=False)
    oracle = over_training(run, cfg.path("data"), cfg.path("features"), window=3)
    audio = oracle[(oracle.indicator == "loss_va") & (oracle.target == "audio")]
    assert len(audio) == 2 and (audio["auroc"] == 1.0).all() and (audio["ap"] == 1.0).all()


def test_loss_total_over_training_uses_the_runs_vt_weight(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "scores").mkdir(parents=True)
    pd.DataFrame({"step": [0], "item_id": ["x"], "cos": [0.1], "cos_representation": [0.2], "loss_va": [1.0], "loss_vt": [4.0]}).to_csv(
        run / "scores" / "step_000000.csv", index=False)
    config_mod.with_overrides(config_mod.load(), ["pretrain.vt_weight=0.25"]).write(run)
    scores = read_scores(run)
    assert scores["loss_total"].tolist() == [2.0]
    assert "cos_meeting_point" in scores and read_scores(run, vt_weight=1.0)["loss_total"].tolist() == [5.0]


def test_youtube8m_rows_are_scored_against_their_own_ground_truth(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    from cmgh.report.detection_over_training import noise_over_training
    from tests.data.youtube8m_tree import youtube8m_world

    cfg = config_mod.with_overrides(
        youtube8m_world(tiny_world, tmp_path / "world"),
        ["pretrain.batch_size=8", "pretrain.steps=6", "pretrain.score_every=1", "model.width=32", "model.heads=2", "model.depth=1",
         f"paths.results={tmp_path / 'results'}", "evaluate.noise_training.window=3", "tracking.enabled=false"],
    )
    run = layout.run_dir(tmp_path / "results", "ms", "baseline", 0)
    pretrain(cfg, RunSpec("ms", "baseline", 0, run))
    dumped = read_scores(run)["dataset"].value_counts()
    table = over_training(run, cfg.path("data"), cfg.path("features"), window=3)
    windows = table.drop_duplicates(["dataset", "step"])
    assert windows["dataset"].tolist() == ["howto100m"] * 2 + ["youtube8m"] * 2 and windows["step"].tolist() == [0, 3] * 2
    assert windows.groupby("dataset")["n"].sum().to_dict() == dumped.to_dict()  # every dumped row of both corpora is labelled

    # Oracles: each corpus's rows scored by its own truth (YouTube-8M ids are unknown to HowTo100M's labels).
    truths = {}
    for name in ("howto100m", "youtube8m"):
        index = pd.read_parquet(layout.feature_index(cfg.path("features"), name))
        truths[name] = label_clips(index, noise_labels.read_noise_labels(layout.noise_labels(cfg.path("data"), name))).set_index("item_id")
    for dump in layout.score_files(run):
        scores = pd.read_csv(dump)
        scores["loss_va"] = [truths[d].at[i, "audio"] for d, i in zip(scores["dataset"], scores["item_id"], strict=True)]
        scores.to_csv(dump, index=False)
    oracle = over_training(run, cfg.path("data"), cfg.path("features"), window=3)
    assert (oracle[(oracle.indicator == "loss_va") & (oracle.target == "audio")]["auroc"] == 1.0).all()
    only = over_training(run, cfg.path("data"), cfg.path("features"), window=3, datasets=["youtube8m", "audioset"])
    assert set(only["dataset"]) == {"youtube8m"}

    # The step scores both corpora; the report's table has a row per corpus, metric, target and window.
    payload = evaluate_run(cfg, TASK, run)
    assert payload["params"]["corpora"] == ["howto100m", "youtube8m"] and payload["params"]["windows"] == 2
    report = noise_over_training(tmp_path / "results")
    either = report[(report.metric == "auroc") & (report.target == "either")]
    assert either[["dataset", "step"]].values.tolist() == [["howto100m", 0], ["howto100m", 3], ["youtube8m", 0], ["youtube8m", 3]]
    expected = oracle[(oracle.indicator == "loss_va") & (oracle.target == "either")]["auroc"]
    assert either["loss_va mean"].round(9).tolist() == expected.round(9).tolist()
    assert not math.isnan(float(either["loss_va mean"].iloc[0]))
