"""Noise ground truth, defined once: the midpoint-in-segment join, the indicator table, loss_total."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from cmgh import config as config_mod
from cmgh import layout
from cmgh.data.datasets import noise_labels
from cmgh.errors import DataError
from cmgh.evaluate import INDICATORS, NOISE_INDICATORS, TARGETS, TRAINING_INDICATORS
from cmgh.evaluate.noise_truth import clip_truth, label_clips, loss_total


def _by_start(index: pd.DataFrame, noise: pd.DataFrame) -> pd.DataFrame:
    """The former rule of the final noise evaluation: same video and clip_start within 1e-3 s."""
    merged = index[["item_id", "video_id", "clip_start"]].merge(noise, on="video_id", suffixes=("", "_gt"))
    merged = merged[(merged["clip_start"] - merged["clip_start_gt"]).abs() < 1e-3].drop_duplicates("item_id")
    truth = merged[["item_id"]].copy()
    truth["audio"] = 1 - merged["audio_aligned"].astype(int).to_numpy()
    truth["text"] = 1 - merged["text_aligned"].astype(int).to_numpy()
    truth["either"] = truth[["audio", "text"]].max(axis=1)
    return truth


def _world(cfg: config_mod.Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    index = pd.read_parquet(layout.feature_index(cfg.path("features"), "howto100m"))
    return index, noise_labels.read_noise_labels(layout.noise_labels(cfg.path("data")))


def test_start_match_and_midpoint_match_label_the_same_clips(tiny_world: config_mod.Config) -> None:
    index, noise = _world(tiny_world)
    by_start = _by_start(index, noise).sort_values("item_id").reset_index(drop=True)
    by_mid = label_clips(index, noise).sort_values("item_id").reset_index(drop=True)
    assert len(by_start) == len(index) > 0
    pd.testing.assert_frame_equal(by_start, by_mid, check_dtype=False)
    assert clip_truth(tiny_world.path("data"), index).equals(label_clips(index, noise))


def test_midpoint_rule_labels_windows_inside_a_segment() -> None:
    noise = pd.DataFrame({"video_id": ["v", "v", "w"], "clip_start": [0.0, 2.0, 0.0], "clip_end": [2.0, 4.0, 2.0],
                          "audio_aligned": [1, 0, 1], "text_aligned": [0, 1, 1]})
    # Half-length windows: the second starts inside the first segment; u has no label.
    index = pd.DataFrame({"item_id": ["a", "b", "c", "d", "e"], "video_id": ["v", "v", "v", "w", "u"],
                          "clip_start": [0.0, 1.0, 2.5, 0.5, 0.0], "clip_end": [1.0, 2.0, 3.5, 1.5, 1.0]})
    truth = label_clips(index, noise).set_index("item_id")
    assert list(truth.index) == ["a", "b", "c", "d"]
    assert truth.loc["a"].tolist() == truth.loc["b"].tolist() == [0, 1, 1]
    assert truth.loc["c"].tolist() == [1, 0, 1]
    assert truth.loc["d"].tolist() == [0, 0, 0]
    assert list(truth.columns) == list(TARGETS)
    with pytest.raises(DataError, match="matches no extracted clip"):
        label_clips(index[index.video_id == "u"], noise)


def test_one_indicator_table() -> None:
    assert set(NOISE_INDICATORS) | set(TRAINING_INDICATORS) == set(INDICATORS)
    for subset in (NOISE_INDICATORS, TRAINING_INDICATORS):
        assert all(subset[name] == INDICATORS[name] for name in subset)
    assert all((sign < 0) == name.startswith("cos") for name, sign in INDICATORS.items())
    assert list(NOISE_INDICATORS) == ["cos_representation", "cos_representation_exact", "cos_parameters", "cos_all_parameters", "loss_va", "loss_vt", "loss_total"]


def test_loss_total_weights_the_video_text_loss() -> None:
    l_va, l_vt = torch.tensor([1.0, 2.0]), torch.tensor([4.0, 8.0])
    assert loss_total(l_va, l_vt, 0.5).tolist() == [3.0, 6.0]
    assert loss_total(pd.Series([1.0]), pd.Series([2.0]), 1.0).tolist() == [3.0]
