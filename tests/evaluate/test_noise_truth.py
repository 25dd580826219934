"""Noise ground truth: the old start-within-1e-3 join and the midpoint-in-segment join agree."""

from __future__ import annotations

import pandas as pd

from cmgh import config as config_mod
from cmgh.data import formats
from cmgh.evaluate.tasks import noise_truth
from cmgh.evaluate.training_noise import label_clips


def test_start_match_and_midpoint_match_label_the_same_clips(tiny_world: config_mod.Config) -> None:
    index = pd.read_parquet(tiny_world.path("features") / "howto100m" / "index.parquet")
    noise = formats.read_noise_labels(tiny_world.path("data") / "howto100m" / "noise_labels.csv")
    by_start = noise_truth(tiny_world, index).sort_values("item_id").reset_index(drop=True)
    by_mid = label_clips(index, noise).sort_values("item_id").reset_index(drop=True)
    assert len(by_start) == len(index) > 0
    pd.testing.assert_frame_equal(by_start, by_mid, check_dtype=False)
