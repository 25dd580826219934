"""Metrics on hand-computed cases (ties, empty classes, perfect/reversed rankings) and against
independent references: brute-force Python loops written here and scikit-learn."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from cmgh.errors import DataError
from cmgh.evaluate.metrics import (
    average_precision,
    binary_auroc,
    concept_retrieval_metrics,
    d_prime,
    mean_auc,
    mean_average_precision,
    retrieval_metrics,
    roc_curve,
    topk_accuracy,
)

# --------------------------------------------------------------------------- brute-force references


def bf_rank(row: list[float], idx: int) -> int:
    """Pessimistic 1-based rank: 1 + #others scoring >= row[idx]."""
    return 1 + sum(1 for j, v in enumerate(row) if j != idx and v >= row[idx])


def bf_ap(scores: list[float], targets: list[int]) -> float:
    pos = [i for i, t in enumerate(targets) if t]
    if not pos:
        return math.nan
    total = 0.0
    for p in pos:
        ge = [j for j in range(len(scores)) if scores[j] >= scores[p]]
        total += sum(targets[j] for j in ge) / len(ge)
    return total / len(pos)


def bf_auc(scores: list[float], targets: list[int]) -> float:
    pos = [s for s, t in zip(scores, targets, strict=True) if t]
    neg = [s for s, t in zip(scores, targets, strict=True) if not t]
    if not pos or not neg:
        return math.nan
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def bf_macro(fn, scores: np.ndarray, targets: np.ndarray) -> float:
    vals = [fn(list(scores[:, c]), list(targets[:, c])) for c in range(scores.shape[1])]
    vals = [v for v in vals if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


# --------------------------------------------------------------------------- top-k accuracy


def test_topk_hand_computed_with_ties_and_clipping():
    logits = [[0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [1.0, 0.0, 0.0]]
    # ranks of the true class: 1, 3 (tie with class 1 counts above), 1
    out = topk_accuracy(np.array(logits), np.array([1, 0, 0]), ks=(1, 2, 5))
    assert set(out) == {"top1", "top2", "top5"}
    assert out["top1"] == pytest.approx(200 / 3)
    assert out["top2"] == pytest.approx(200 / 3)
    assert out["top5"] == pytest.approx(100.0)  # k=5 clipped to C=3


def test_topk_default_keys_and_constant_model_is_pessimistic():
    out = topk_accuracy(torch.zeros(4, 10), torch.tensor([0, 3, 5, 9]))
    assert out == {"top1": 0.0, "top5": 0.0}
    assert topk_accuracy(torch.zeros(4, 10), torch.tensor([0, 3, 5, 9]), ks=(10,)) == {"top10": 100.0}


def test_topk_perfect_and_reversed():
    labels = torch.arange(6) % 6
    perfect = torch.nn.functional.one_hot(labels, 6).float()
    assert topk_accuracy(perfect, labels) == {"top1": 100.0, "top5": 100.0}
    reversed_ = -perfect  # true class strictly last of 6
    assert topk_accuracy(reversed_, labels) == {"top1": 0.0, "top5": 0.0}


def test_topk_matches_brute_force_on_random_tied_inputs():
    rng = np.random.default_rng(0)
    logits = rng.integers(0, 4, size=(300, 7)).astype(np.float32)  # many ties
    labels = rng.integers(0, 7, size=300)
    out = topk_accuracy(logits, labels, ks=(1, 3, 5, 9))
    for k in (1, 3, 5, 9):
        hits = sum(bf_rank(list(logits[i]), int(labels[i])) <= min(k, 7) for i in range(300))
        assert out[f"top{k}"] == pytest.approx(100.0 * hits / 300)


def test_topk_empty_is_nan_and_errors():
    out = topk_accuracy(np.zeros((0, 5)), np.zeros(0, dtype=int))
    assert math.isnan(out["top1"]) and math.isnan(out["top5"])
    with pytest.raises(DataError, match=r"labels: shape \[3\] does not match logits shape \[2, 5\]"):
        topk_accuracy(np.zeros((2, 5)), np.zeros(3, dtype=int))
    with pytest.raises(DataError, match=r"logits"):
        topk_accuracy(np.zeros(5), np.zeros(5, dtype=int))
    with pytest.raises(DataError, match=r"labels"):
        topk_accuracy(np.zeros((2, 5)), np.array([0, 5]))


# --------------------------------------------------------------------------- mAP


def test_ap_hand_computed():
    # positives at ranks 1 and 3 -> (1/1 + 2/3) / 2
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(5 / 6)
    # ties pessimistic: positive tied with two negatives sits at rank 3 -> (1/3 + 2/4) / 2
    assert average_precision([0.5, 0.5, 0.5, 0.1], [1, 0, 0, 1]) == pytest.approx(5 / 12)
    assert average_precision([4.0, 3.0, 2.0, 1.0], [1, 1, 0, 0]) == pytest.approx(1.0)  # perfect
    assert average_precision([4.0, 3.0, 2.0, 1.0], [0, 0, 1, 1]) == pytest.approx(5 / 12)  # reversed
    assert average_precision([1.0, 1.0, 1.0, 1.0], [1, 0, 0, 0]) == pytest.approx(0.25)  # constant scorer


def test_map_skips_classes_without_positives():
    scores = np.array([[0.9, 0.5, 0.3], [0.8, 0.5, 0.2], [0.7, 0.5, 0.1], [0.6, 0.1, 0.0]])
    targets = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0]])
    # class 0: 5/6, class 1 (ties): 5/12, class 2: no positive -> skipped
    assert mean_average_precision(scores, targets) == pytest.approx((5 / 6 + 5 / 12) / 2)
    assert math.isnan(mean_average_precision(scores, np.zeros_like(targets)))
    assert math.isnan(mean_average_precision(np.zeros((0, 3)), np.zeros((0, 3))))


def test_map_matches_brute_force_with_ties():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, size=(60, 8)).astype(np.float64)
    targets = (rng.random((60, 8)) < 0.3).astype(int)
    targets[:, 3] = 0  # a class without positives
    assert mean_average_precision(scores, targets) == pytest.approx(bf_macro(bf_ap, scores, targets), abs=1e-12)


def test_map_matches_sklearn_on_tie_free_random_floats():
    rng = np.random.default_rng(2)
    scores = rng.random((500, 12))
    targets = (rng.random((500, 12)) < 0.1).astype(int)
    ref = np.mean([average_precision_score(targets[:, c], scores[:, c]) for c in range(12) if targets[:, c].any()])
    assert mean_average_precision(torch.from_numpy(scores).float(), torch.from_numpy(targets).bool()) == pytest.approx(
        ref, abs=1e-9
    )


def test_binary_ap_equals_sklearn_step_ap_even_with_ties():
    # Pessimistic-tie AP coincides with sklearn's sum_k (R_k - R_{k-1}) P_k over distinct thresholds.
    rng = np.random.default_rng(3)
    for _ in range(50):
        s = rng.integers(0, 4, size=25).astype(float)
        y = rng.integers(0, 2, size=25)
        if not y.any():
            continue
        assert average_precision(s, y) == pytest.approx(average_precision_score(y, s), abs=1e-12)


# --------------------------------------------------------------------------- AUC / d-prime


def test_auc_hand_computed():
    assert binary_auroc([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(0.75)
    assert binary_auroc([0.5, 0.5, 0.5, 0.1], [1, 0, 0, 1]) == pytest.approx(0.25)  # ties count 0.5
    assert binary_auroc([3.0, 2.0, 1.0], [1, 1, 0]) == pytest.approx(1.0)
    assert binary_auroc([3.0, 2.0, 1.0], [0, 0, 1]) == pytest.approx(0.0)
    assert binary_auroc([7.0] * 4, [1, 0, 1, 0]) == pytest.approx(0.5)
    assert math.isnan(binary_auroc([0.1, 0.2], [1, 1]))
    assert math.isnan(binary_auroc([0.1, 0.2], [0, 0]))


def test_mean_auc_skips_single_label_classes():
    scores = np.array([[0.9, 0.5, 0.3, 0.1], [0.8, 0.5, 0.2, 0.2], [0.7, 0.5, 0.1, 0.3], [0.6, 0.1, 0.0, 0.4]])
    targets = np.array([[1, 1, 0, 1], [0, 0, 0, 1], [1, 0, 0, 1], [0, 1, 0, 1]])
    # class 0: 0.75, class 1: 0.25, class 2 (no positive) and class 3 (no negative) skipped
    assert mean_auc(scores, targets) == pytest.approx(0.5)
    assert math.isnan(mean_auc(scores, np.ones_like(targets)))


def test_mean_auc_matches_sklearn_and_brute_force():
    rng = np.random.default_rng(4)
    scores = rng.random((400, 10))
    targets = (rng.random((400, 10)) < 0.2).astype(int)
    ref = roc_auc_score(targets, scores, average="macro")
    assert mean_auc(scores, targets) == pytest.approx(ref, abs=1e-9)
    tied = rng.integers(0, 3, size=(50, 6)).astype(float)
    t2 = (rng.random((50, 6)) < 0.4).astype(int)
    assert mean_auc(tied, t2) == pytest.approx(bf_macro(bf_auc, tied, t2), abs=1e-12)
    assert mean_auc(tied, t2) == pytest.approx(roc_auc_score(t2, tied, average="macro"), abs=1e-12)


def test_d_prime():
    assert d_prime(0.5) == 0.0
    assert d_prime(0.75) == pytest.approx(0.9538726, abs=1e-6)
    assert d_prime(0.9) == pytest.approx(math.sqrt(2) * statistics.NormalDist().inv_cdf(0.9), abs=1e-12)
    assert d_prime(0.1) == pytest.approx(-d_prime(0.9))
    assert d_prime(1.0) == math.inf
    assert math.isnan(d_prime(math.nan))


# --------------------------------------------------------------------------- retrieval


def test_retrieval_hand_computed():
    sim = np.array([[0.9, 0.1, 0.2, 0.95], [0.5, 0.5, 0.5, 0.5], [0.0, 0.1, 0.3, 0.2]], dtype=np.float32)
    # ranks: 2, 4 (all tied -> last), 1
    out = retrieval_metrics(sim)
    assert set(out) == {"R@1", "R@5", "R@10", "MedR", "MnR"}
    assert out["R@1"] == pytest.approx(100 / 3)
    assert out["R@5"] == pytest.approx(100.0)
    assert out["R@10"] == pytest.approx(100.0)
    assert out["MedR"] == 2.0
    assert out["MnR"] == pytest.approx(7 / 3)


def test_retrieval_perfect_reversed_even_median():
    assert retrieval_metrics(torch.eye(12)) == {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0, "MedR": 1.0, "MnR": 1.0}
    rev = retrieval_metrics(-torch.eye(12))  # match strictly last among 12
    assert rev == {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "MedR": 12.0, "MnR": 12.0}
    out = retrieval_metrics(np.array([[1.0, 0.0], [1.0, 0.0]]))  # ranks 1, 2
    assert out["MedR"] == 1.5 and out["MnR"] == 1.5 and out["R@1"] == 50.0


def test_retrieval_matches_brute_force_random():
    rng = np.random.default_rng(5)
    for sim in (rng.integers(0, 6, size=(300, 340)).astype(np.float32), rng.standard_normal((300, 300))):
        out = retrieval_metrics(sim)  # 300 rows spans several chunks
        ranks = [bf_rank(list(sim[i]), i) for i in range(sim.shape[0])]
        assert out["R@1"] == pytest.approx(100 * np.mean([r <= 1 for r in ranks]))
        assert out["R@5"] == pytest.approx(100 * np.mean([r <= 5 for r in ranks]))
        assert out["R@10"] == pytest.approx(100 * np.mean([r <= 10 for r in ranks]))
        assert out["MedR"] == pytest.approx(statistics.median(ranks))
        assert out["MnR"] == pytest.approx(statistics.mean(ranks))


def test_retrieval_undefined_and_errors():
    assert all(math.isnan(v) for v in retrieval_metrics(np.zeros((0, 4))).values())
    with pytest.raises(DataError, match=r"sim: shape \[5, 3\]"):
        retrieval_metrics(np.zeros((5, 3)))
    with pytest.raises(DataError, match=r"sim: .*shape \[4\]"):
        retrieval_metrics(np.zeros(4))
    bad = np.zeros((3, 3))
    bad[1, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        retrieval_metrics(bad)


def test_concept_retrieval_hand_computed_with_ties():
    """Items of concepts A A B B C C; every item of the query's concept is relevant."""
    items = ["A", "A", "B", "B", "C", "C"]
    sim = np.array([
        [0.9, 0.2, 0.9, 0.1, 0.5, 0.2],  # A: irrelevant item 2 ties the best relevant one -> first relevant at rank 2;
                                         # AP = (1/2 [2 items >= 0.9, 1 relevant] + 2/5 [5 items >= 0.2, 2 relevant]) / 2 = 0.45
        [0.3, 0.3, 0.8, 0.8, 0.1, 0.0],  # B: both relevant tied at the top (ties among relevant items cost nothing): rank 1, AP 1
        [0.7, 0.7, 0.7, 0.7, 0.7, 0.7],  # C: a constant scorer: every irrelevant item ranks above -> rank 5, AP (1/3 + 1/3) / 2
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # D: no relevant item -> left out
    ])
    out = concept_retrieval_metrics(sim, ["A", "B", "C", "D"], items)
    assert set(out) == {"concept_mAP", "concept_R@1", "concept_R@5", "concept_R@10"}
    assert out["concept_mAP"] == pytest.approx((0.45 + 1.0 + 1 / 3) / 3)
    assert out["concept_R@1"] == pytest.approx(100 / 3)
    assert out["concept_R@5"] == pytest.approx(100.0)
    assert out["concept_R@10"] == pytest.approx(100.0)
    assert concept_retrieval_metrics(sim, ["A", "B", "C", "D"], items, ks=(2, 4)) == pytest.approx(
        {"concept_mAP": (0.45 + 1.0 + 1 / 3) / 3, "concept_R@2": 200 / 3, "concept_R@4": 200 / 3})


def test_concept_retrieval_one_item_per_concept_is_instance_retrieval():
    rng = np.random.default_rng(3)
    sim = rng.integers(0, 5, size=(40, 50)).astype(np.float64)
    out = concept_retrieval_metrics(sim, np.arange(40), np.arange(50))
    inst = retrieval_metrics(sim)
    for k in (1, 5, 10):
        assert out[f"concept_R@{k}"] == pytest.approx(inst[f"R@{k}"])
    assert out["concept_mAP"] == pytest.approx(np.mean([1 / bf_rank(list(sim[i]), i) for i in range(40)]))


def test_concept_retrieval_undefined_and_errors():
    out = concept_retrieval_metrics(np.zeros((2, 3)), [7, 8], [1, 2, 3])
    assert all(math.isnan(v) for v in out.values())
    assert all(math.isnan(v) for v in concept_retrieval_metrics(np.zeros((0, 3)), [], [1, 2, 3]).values())
    with pytest.raises(DataError, match="groups: expected 2 query and 3 item groups"):
        concept_retrieval_metrics(np.zeros((2, 3)), [1], [1, 2, 3])


# --------------------------------------------------------------------------- ROC curve


def test_roc_curve_hand_computed():
    fpr, tpr, thr = roc_curve([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0])
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.5, 0.1])
    np.testing.assert_allclose(tpr, [0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.5, 1.0])
    fpr, tpr, _ = roc_curve([0.3, 0.2], [1, 1])
    assert np.isnan(fpr).all()
    np.testing.assert_allclose(tpr, [0.0, 0.5, 1.0])


def test_roc_curve_matches_sklearn_and_integrates_to_auc():
    rng = np.random.default_rng(6)
    s = rng.integers(0, 10, size=200).astype(float)
    y = rng.integers(0, 2, size=200)
    fpr, tpr, thr = roc_curve(torch.from_numpy(s), torch.from_numpy(y))
    f2, t2, th2 = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, f2)
    np.testing.assert_allclose(tpr, t2)
    np.testing.assert_allclose(thr[1:], th2[1:])
    assert np.trapezoid(tpr, fpr) == pytest.approx(binary_auroc(s, y), abs=1e-12)


# --------------------------------------------------------------------------- input validation


def test_shape_and_value_errors_name_the_argument():
    with pytest.raises(DataError, match=r"targets: shape \[3, 2\] does not match scores shape \[3, 4\]"):
        mean_average_precision(np.zeros((3, 4)), np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"targets: shape \[4, 3\] does not match scores shape \[3, 4\]"):
        mean_auc(np.zeros((3, 4)), np.zeros((4, 3)))
    with pytest.raises(DataError, match=r"labels: shape \[4\] does not match scores shape \[5\]"):
        binary_auroc(np.zeros(5), np.zeros(4))
    with pytest.raises(DataError, match=r"labels: shape \[2\] does not match scores shape \[3\]"):
        roc_curve(np.zeros(3), np.zeros(2))
    with pytest.raises(DataError, match="0/1"):
        average_precision([0.1, 0.2], [0, 2])
    with pytest.raises(DataError, match="NaN"):
        mean_auc(np.array([[np.nan], [0.0]]), np.array([[1], [0]]))
    with pytest.raises(DataError, match=r"scores: expected 1-D"):
        average_precision(np.zeros((2, 2)), np.zeros((2, 2)))
