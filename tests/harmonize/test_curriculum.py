"""Gradient-based curriculum (our reconstruction of CMGH's): schedule, selection, scorers, granularity."""

from __future__ import annotations

import math

import pytest
import torch

from cmgh.harmonize import curriculum
from cmgh.harmonize.curriculum import Curriculum, keep_fraction
from cmgh.errors import ConfigError


def kf(step: int, schedule: str, start: float = 1.0, end: float = 0.5) -> float:
    return keep_fraction(step, warmup_steps=10, total_steps=111, start_keep=start, end_keep=end, schedule=schedule)


def test_registry() -> None:
    assert {"none", "cmgh"} <= set(curriculum.names())
    with pytest.raises(ConfigError):
        curriculum.get("nope")


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_warmup_keeps_everything(schedule: str) -> None:
    assert kf(0, schedule) == 1.0 and kf(9, schedule) == 1.0


def test_schedule_values() -> None:
    assert kf(10, "linear") == 1.0 and kf(60, "linear") == pytest.approx(0.75) and kf(110, "linear") == pytest.approx(0.5)
    assert kf(500, "linear") == pytest.approx(0.5)  # clipped after the end
    assert kf(10, "cosine") == pytest.approx(1.0) and kf(60, "cosine") == pytest.approx(0.75)
    assert kf(35, "cosine") == pytest.approx(0.5 + 0.5 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert kf(110, "cosine") == pytest.approx(0.5)
    assert kf(10, "constant") == 0.5 and kf(110, "constant") == 0.5
    # relaxing: start below end
    assert kf(10, "linear", 0.6, 0.9) == pytest.approx(0.6) and kf(110, "linear", 0.6, 0.9) == pytest.approx(0.9)
    with pytest.raises(ConfigError):
        kf(10, "step")


def test_keep_cleanest_is_deterministic_and_skips_ineligible() -> None:
    noisiness = torch.tensor([0.5, 0.1, 0.9, 0.1, 0.3, 2.0])
    eligible = torch.tensor([True, True, True, True, True, False])
    kept = curriculum.get("cmgh")(noisiness, eligible, 0.5)  # ceil(0.5 * 5) = 3 kept among eligible
    assert kept.tolist() == [False, True, False, True, True, True]
    ties = curriculum.get("cmgh")(torch.zeros(4), torch.ones(4, dtype=torch.bool), 0.5)
    assert ties.tolist() == [True, True, False, False]  # ties broken by index
    assert curriculum.get("none")(noisiness, eligible, 0.1).all()


def test_conflict_scorer_triplet_granularity() -> None:
    cur = Curriculum("cmgh", "conflict", "triplet", "constant", 0, 1.0, 0.5, 100)
    cos = torch.tensor([0.9, -0.8, 0.1, -0.2, 0.0])
    valid = torch.tensor([True, True, True, True, False])
    out = cur(5, valid, cosine=cos)
    assert out.kept.tolist() == [True, False, True, False, True]
    assert out.w_va.tolist() == out.w_vt.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert out.keep == 0.5 and out.kept_fraction == 0.5
    torch.testing.assert_close(out.noisiness, torch.tensor([-0.9, 0.8, -0.1, 0.2, 0.0]))


def test_loss_scorer_loss_granularity() -> None:
    cur = Curriculum("cmgh", "loss", "loss", "constant", 0, 1.0, 0.5, 100)
    l_vt = torch.tensor([3.0, 1.0, 2.0, 0.5])
    out = cur(0, torch.ones(4, dtype=torch.bool), l_va=torch.zeros(4), l_vt=l_vt)
    assert out.w_vt.tolist() == [0.0, 1.0, 0.0, 1.0]  # higher loss = noisier
    assert out.w_va.tolist() == [1.0] * 4  # the video-audio term is kept


def test_loss_scorer_triplet_uses_total() -> None:
    cur = Curriculum("cmgh", "loss", "triplet", "constant", 0, 1.0, 0.5, 100, vt_weight=2.0)
    out = cur(0, torch.ones(2, dtype=torch.bool), l_va=torch.tensor([5.0, 0.0]), l_vt=torch.tensor([0.0, 2.0]))
    assert out.kept.tolist() == [False, True]  # scores 5 + 2*0 = 5 > 0 + 2*2 = 4: row 0 is noisier


def test_inactive_or_warmup_keeps_all_and_from_config(tiny_config) -> None:
    cur = Curriculum.from_config(tiny_config.pretrain)
    assert cur.rule == tiny_config.pretrain.curriculum.rule and cur.total_steps == tiny_config.pretrain.steps
    active = Curriculum("cmgh", "conflict", "triplet", "linear", 5, 1.0, 0.5, 20)
    out = active(2, torch.ones(3, dtype=torch.bool), cosine=torch.tensor([-1.0, 0.0, 1.0]))
    assert out.kept.all() and out.keep == 1.0
    assert active.state_dict() == {}
