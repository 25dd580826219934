"""Curriculum scorers and selection: the ground-truth controls (oracle, quality), the threshold rule, relaxing schedules."""

from __future__ import annotations

import pytest
import torch

from cmgh import losses
from cmgh.errors import ConfigError, DataError
from cmgh.harmonize import Harmonizer, ground_truth, harmonized_backward, scorers
from cmgh.harmonize.curriculum import Curriculum, keep_fraction
from cmgh.harmonize.truth import MISALIGNED_AUDIO, MISALIGNED_TEXT, GroundTruth
from tests.harmonize.heads import problem

AUDIO = torch.tensor([False, True, False, False, True, False])
TEXT = torch.tensor([False, False, True, False, True, False])


def test_registry_lists_the_controls() -> None:
    assert {"conflict", "loss", "oracle", "quality"} <= set(scorers.names())
    assert all(line.split(": ", 1)[1] for line in scorers.described())
    with pytest.raises(ConfigError, match="pretrain.curriculum.scorer"):
        Curriculum("cmgh", "nope")


def test_ground_truth_from_the_batch() -> None:
    assert ground_truth({"video": torch.zeros(2)}) is None
    truth = ground_truth({MISALIGNED_AUDIO: torch.tensor([1, 0]), MISALIGNED_TEXT: torch.tensor([0, 0])})
    assert truth is not None and truth.audio.tolist() == [True, False] and truth.misaligned.tolist() == [True, False]
    with pytest.raises(DataError, match="both flags or neither"):
        ground_truth({MISALIGNED_TEXT: torch.tensor([True])})


@pytest.mark.parametrize("rule", ["threshold", "cmgh"])
def test_oracle_drops_exactly_the_misaligned_pairs_term(rule: str) -> None:
    """Full strength (threshold) and through the keep schedule (rank; keep = 3/6 = the clean share)."""
    p = problem()
    cur = Curriculum(rule, "oracle", "loss", "constant", 0, 1.0, 3 / 6, 10)
    video_rep, meet, l_va, l_vt = p.forward()
    stats = harmonized_backward(video_rep, meet, l_va, l_vt, p.valid, curriculum=cur, truth=GroundTruth(AUDIO, TEXT))
    assert stats.weights is not None
    assert stats.weights.w_va.tolist() == (~AUDIO).float().tolist()  # NCE term of misaligned audio pairs
    assert stats.weights.w_vt.tolist() == (~TEXT).float().tolist()  # MIL-NCE term of misaligned text pairs
    got = p.weight.grad.clone()
    p.weight.grad = None
    l_va, l_vt = p.losses_at(p.x @ p.weight)
    losses.objective(l_va, l_vt, p.valid, 1.0, (~AUDIO).float(), (~TEXT).float()).total.backward()
    torch.testing.assert_close(got, p.weight.grad)  # rule none: the gradient of the objective without those terms


def test_oracle_triplet_granularity_schedule_and_downweighting() -> None:
    truth = GroundTruth(AUDIO, TEXT)
    valid = torch.ones(6, dtype=torch.bool)
    triplet = Curriculum("threshold", "oracle", "triplet", "constant", 0, 1.0, 1.0, 10)(0, valid, truth=truth)
    assert triplet.w_va.tolist() == triplet.w_vt.tolist() == (~(AUDIO | TEXT)).float().tolist()
    # the schedule asks for more than the noise: unflagged triplets dropped by rank lose their video-text term
    tight = Curriculum("cmgh", "oracle", "loss", "constant", 0, 1.0, 2 / 6, 10)(0, valid, truth=truth)
    assert tight.w_va.tolist() == (~AUDIO).float().tolist()
    assert tight.w_vt.tolist() == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]  # the 3 flagged, then clean row 5 (ties keep lower indices)
    # ... or keeps more than the clean share: only some flagged triplets are dropped
    loose = Curriculum("cmgh", "oracle", "triplet", "constant", 0, 1.0, 5 / 6, 10)(0, valid, truth=truth)
    assert loose.kept.tolist() == [True, True, True, True, False, True]
    down = Curriculum("threshold", "oracle", "loss", "constant", 0, 1.0, 1.0, 10, flagged_weight=0.25)(0, valid, truth=truth)
    assert down.w_vt.tolist() == [1.0, 1.0, 0.25, 1.0, 0.25, 1.0]


@pytest.mark.parametrize("scorer", ["oracle", "quality"])
def test_ground_truth_scorers_refuse_data_without_it(scorer: str) -> None:
    p = problem()
    cur = Curriculum("cmgh", scorer, "loss", "linear", 10, 1.0, 0.7, 100)
    video_rep, meet, l_va, l_vt = p.forward()
    with pytest.raises(DataError, match="noise_labels.csv") as err:
        harmonized_backward(video_rep, meet, l_va, l_vt, p.valid, curriculum=cur, step=0)  # refused in the warm-up too
    assert "\n" not in str(err.value)
    with pytest.raises(DataError):
        Harmonizer(curriculum=cur).backward(video_rep, meet, l_va, l_vt, p.valid, step=50)


def auroc(score: torch.Tensor, positive: torch.Tensor) -> float:
    ranks = torch.empty_like(score).scatter_(0, score.argsort(), torch.arange(1, score.numel() + 1, dtype=score.dtype))
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@pytest.mark.parametrize("target", [0.55, 0.65, 0.8, 0.95])
def test_quality_scorer_reaches_its_target_auroc(target: float) -> None:
    g = torch.Generator().manual_seed(1)
    text = torch.rand(40_000, generator=g) < 0.4
    truth = GroundTruth(torch.zeros_like(text), text)
    cur = Curriculum("cmgh", "quality", "triplet", quality_auroc=target, quality_seed=5)
    score = cur.noisiness(truth=truth, step=7)
    assert abs(auroc(score, text) - target) < 0.01
    torch.testing.assert_close(cur.noisiness(truth=truth, step=7), score)  # deterministic for a seed and step
    assert not torch.equal(cur.noisiness(truth=truth, step=8), score)
    assert not torch.equal(Curriculum("cmgh", "quality", quality_auroc=target, quality_seed=6).noisiness(truth=truth, step=7), score)


def test_quality_noise_scale() -> None:
    assert scorers.quality_noise_scale(1.0) == 0.0
    assert scorers.quality_noise_scale(0.76025) == pytest.approx(1.0, abs=1e-3)  # Phi(1/sqrt 2) = 0.76025
    for bad in (0.5, 0.3, 1.2):
        with pytest.raises(ConfigError, match="quality_auroc"):
            Curriculum("cmgh", "quality", quality_auroc=bad)


def test_threshold_rule_on_the_cosine() -> None:
    cos = torch.tensor([-0.3, 0.2, -0.05, 0.5, -0.9])
    valid = torch.tensor([True, True, True, True, False])
    cur = Curriculum("threshold", "conflict", "triplet", "linear", 3, 1.0, 1.0, 10, threshold=0.1)
    assert not cur.selecting(2) and cur(2, valid, cosine=cos).kept.all()  # warm-up
    out = cur(3, valid, cosine=cos)  # after it, whatever the schedule (keep 1.0 here)
    assert cur.selecting(3) and out.kept.tolist() == [False, True, True, True, True]  # cos < -0.1, rows with text only
    assert out.kept_fraction == 0.75
    at_zero = Curriculum("threshold", "conflict", "loss", "constant", 0, 1.0, 1.0, 10)(0, valid, cosine=cos)
    assert at_zero.w_vt.tolist() == [0.0, 1.0, 0.0, 1.0, 1.0] and at_zero.w_va.tolist() == [1.0] * 5  # cos < 0


def test_relaxing_schedule_admits_more_later() -> None:
    """Easy-to-hard: start at keep = 1 - rate, end at 1.0 (every triplet)."""
    values = [keep_fraction(s, warmup_steps=0, total_steps=101, start_keep=0.4, end_keep=1.0, schedule="linear") for s in (0, 50, 100)]
    assert values == pytest.approx([0.4, 0.7, 1.0])
    cur = Curriculum("cmgh", "oracle", "loss", "linear", 0, 0.4, 1.0, 101)
    assert cur.selecting(0) and cur.selecting(99) and not cur.selecting(100)
    truth = GroundTruth(torch.zeros(10, dtype=torch.bool), torch.arange(10) < 6)
    first = cur(0, torch.ones(10, dtype=torch.bool), truth=truth)
    assert first.w_vt.tolist() == [0.0] * 6 + [1.0] * 4  # keeps the 4 clean of 10
    assert cur(100, torch.ones(10, dtype=torch.bool), truth=truth).w_vt.tolist() == [1.0] * 10


def test_train_step_hands_the_batch_ground_truth_to_the_oracle() -> None:
    from tests.harmonize.tiny_vatt import make_batch, make_model, step_grads

    model, batch = make_model(), make_batch()
    oracle = Harmonizer(curriculum=Curriculum("threshold", "oracle", "loss", "constant", 0, 1.0, 1.0, 10))
    with pytest.raises(DataError, match="noise_labels.csv"):
        step_grads(model, batch, oracle)
    text = torch.tensor([True, False, False, True, False, False, False, True])
    batch = {**batch, MISALIGNED_AUDIO: torch.zeros(8, dtype=torch.bool), MISALIGNED_TEXT: text}
    _, stats = step_grads(model, batch, oracle)
    valid = stats.weights.w_va.new_tensor([1, 0, 1, 1, 0, 1, 1, 1]).bool()  # make_batch: rows 1 and 4 have no text
    assert stats.weights.w_vt.tolist() == torch.where(valid & text, 0.0, 1.0).tolist()
    assert stats.weights.w_va.tolist() == [1.0] * 8
