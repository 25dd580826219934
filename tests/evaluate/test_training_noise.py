"""Noise detection over training: ground-truth join and AUROC per indicator and step window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cmgh import config as config_mod
from cmgh.data import formats
from cmgh.evaluate.noise_truth import TRAINING_INDICATORS as INDICATORS
from cmgh.evaluate.noise_truth import label_clips
from cmgh.evaluate.training_noise import auroc_over_training, read_scores
from cmgh.train.loop import RunSpec, pretrain


def test_clips_take_the_label_of_the_segment_they_fall_in(tiny_world: config_mod.Config) -> None:
    index = pd.read_parquet(tiny_world.path("features") / "howto100m" / "index.parquet")
    noise = formats.read_noise_labels(tiny_world.path("data") / "howto100m" / "noise_labels.csv")
    truth = label_clips(index, noise).set_index("item_id")
    assert len(truth) == len(index)
    for row in index.itertuples():
        seg = noise[(noise.video_id == row.video_id) & (noise.clip_start <= row.clip_start + 1e-6) & (noise.clip_end > row.clip_start + 1e-6)]
        assert len(seg) == 1
        assert truth.at[row.item_id, "audio"] == 1 - seg.audio_aligned.iloc[0]
        assert truth.at[row.item_id, "text"] == 1 - seg.text_aligned.iloc[0]
    rates = tiny_world.data.noise
    assert abs(truth["audio"].mean() - rates.audio_rate) < 0.05 and abs(truth["text"].mean() - rates.text_rate) < 0.05


def test_auroc_over_training_reads_real_dumps(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    cfg = config_mod.with_overrides(
        tiny_world,
        ["pretrain.batch_size=8", "pretrain.steps=6", "pretrain.score_every=1", "model.width=32", "model.heads=2", "model.depth=1",
         "variants.probe={pretrain: {harmonize: {meeting_point: parameters}}}"],
    )
    run = tmp_path / "run"
    pretrain(cfg, RunSpec("ms", "probe", 0, run))
    table = auroc_over_training(run, cfg.path("data"), cfg.path("features"), window=3)
    assert table["step"].tolist() == [0, 3]
    assert (table["n"] == 24).all()  # 3 steps x batch 8 = one epoch of the 24 tiny clips
    values = table[[c for c in table.columns if "/" in c]].to_numpy(dtype=float)
    assert np.all(np.isnan(values) | ((values >= 0) & (values <= 1)))
    assert {c.split("/")[0] for c in table.columns if "/" in c} == set(INDICATORS)

    # An oracle score (the ground truth itself) must give AUROC 1: the join and direction are right.
    index = pd.read_parquet(cfg.path("features") / "howto100m" / "index.parquet")
    truth = label_clips(index, formats.read_noise_labels(cfg.path("data") / "howto100m" / "noise_labels.csv")).set_index("item_id")
    for dump in (run / "scores").glob("step_*.csv"):
        scores = pd.read_csv(dump)
        scores["loss_va"] = truth.loc[scores["item_id"], "audio"].to_numpy()
        scores.to_csv(dump, index=False)
    oracle = auroc_over_training(run, cfg.path("data"), cfg.path("features"), window=3)
    assert (oracle["loss_va/audio"] == 1.0).all()


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
    from cmgh import layout
    from cmgh.report.noise_training import noise_over_training
    from tests.data.youtube8m_tree import youtube8m_world

    cfg = config_mod.with_overrides(
        youtube8m_world(tiny_world, tmp_path / "world"),
        ["pretrain.batch_size=8", "pretrain.steps=6", "pretrain.score_every=1", "model.width=32", "model.heads=2", "model.depth=1"],
    )
    run = layout.run_dir(tmp_path / "results", "ms", "baseline", 0)
    pretrain(cfg, RunSpec("ms", "baseline", 0, run))
    dumped = read_scores(run)["dataset"].value_counts()
    table = auroc_over_training(run, cfg.path("data"), cfg.path("features"), window=3)
    assert table["dataset"].tolist() == ["howto100m"] * 2 + ["youtube8m"] * 2 and table["step"].tolist() == [0, 3] * 2
    assert table.groupby("dataset")["n"].sum().to_dict() == dumped.to_dict()  # every dumped row of both corpora is labelled

    # Oracles: each corpus's rows scored by its own truth (YouTube-8M ids are unknown to HowTo100M's labels).
    truths = {}
    for name in ("howto100m", "youtube8m"):
        index = pd.read_parquet(layout.feature_index(cfg.path("features"), name))
        truths[name] = label_clips(index, formats.read_noise_labels(layout.noise_labels(cfg.path("data"), name))).set_index("item_id")
    for dump in layout.score_files(run):
        scores = pd.read_csv(dump)
        scores["loss_va"] = [truths[d].at[i, "audio"] for d, i in zip(scores["dataset"], scores["item_id"], strict=True)]
        scores.to_csv(dump, index=False)
    oracle = auroc_over_training(run, cfg.path("data"), cfg.path("features"), window=3)
    assert (oracle["loss_va/audio"] == 1.0).all()
    only = auroc_over_training(run, cfg.path("data"), cfg.path("features"), window=3, datasets=["youtube8m", "audioset"])
    assert set(only["dataset"]) == {"youtube8m"}

    # The report's table has a row per corpus and window.
    report = noise_over_training(tmp_path / "results", window=3)
    assert report[["dataset", "step"]].values.tolist() == [["howto100m", 0], ["howto100m", 3], ["youtube8m", 0], ["youtube8m", 3]]
    assert report["loss_va mean"].round(9).tolist() == oracle["loss_va/either"].round(9).tolist()
