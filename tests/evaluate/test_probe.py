"""Linear probes: separable data is learned, shuffled labels are not, selection and determinism."""

from __future__ import annotations

import numpy as np
import pytest

from cmgh.errors import DataError
from cmgh.evaluate import metrics as M
from cmgh.evaluate import probe as P


def blobs(n_per_class: int, classes: int, dim: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 5, size=(classes, dim))
    y = np.repeat(np.arange(classes), n_per_class)
    x = centers[y] + rng.normal(0, spread, size=(len(y), dim))
    return x, y


def top1(logits: np.ndarray, y: np.ndarray) -> float:
    return M.topk_accuracy(logits, y, ks=(1,))["top1"]


def test_separable_features_reach_full_accuracy() -> None:
    x, y = blobs(30, 5, 16, 0.5, seed=0)
    xt, yt = blobs(20, 5, 16, 0.5, seed=0)  # same centers (same seed), fresh draws below
    rng = np.random.default_rng(1)
    xt = xt + rng.normal(0, 0.1, size=xt.shape)
    scaler = P.Standardizer.fit(x)
    probe = P.fit_softmax(scaler(x), y, 5, weight_decay=1e-3)
    assert top1(probe.logits(scaler(x)), y) == 100.0
    assert top1(probe.logits(scaler(xt)), yt) >= 99.0


def test_shuffled_labels_stay_near_chance() -> None:
    x, y = blobs(40, 4, 16, 0.5, seed=2)
    rng = np.random.default_rng(3)
    y_shuffled = rng.permutation(y)
    xt, yt = blobs(40, 4, 16, 0.5, seed=2)
    yt = rng.permutation(yt)
    scaler = P.Standardizer.fit(x)
    chosen = P.select(lambda wd: P.fit_softmax(scaler(x), y_shuffled, 4, wd), [1e-3, 1e-1, 1.0], scaler(xt[:80]), yt[:80], top1)
    acc = top1(chosen.probe.logits(scaler(xt[80:])), yt[80:])
    assert acc < 50.0  # chance is 25 %; 80 test items


def test_probe_matches_sklearn_logistic_regression() -> None:
    sklearn = pytest.importorskip("sklearn.linear_model")
    x, y = blobs(25, 3, 6, 3.0, seed=4)
    wd = 0.1
    probe = P.fit_softmax(x, y, 3, weight_decay=wd, max_iter=1000)
    # sklearn minimizes 0.5 ||W||^2 + C * sum(CE); ours 0.5 wd ||W||^2 + mean(CE) -> C = 1 / (wd n)
    ref = sklearn.LogisticRegression(C=1.0 / (wd * len(y)), tol=1e-10, max_iter=5000).fit(x, y)
    ours = probe.logits(x)
    theirs = ref.decision_function(x)
    # softmax logits are defined up to a per-row constant
    np.testing.assert_allclose(ours - ours.mean(1, keepdims=True), theirs - theirs.mean(1, keepdims=True), atol=1e-3)


def test_multilabel_probe_learns_label_structure() -> None:
    rng = np.random.default_rng(5)
    n, d, c = 200, 12, 4
    x = rng.normal(size=(n, d))
    y = (x[:, :c] > 0.3).astype(np.float64)  # label k is a threshold on feature k
    probe = P.fit_multilabel(x[:150], y[:150], weight_decay=1e-3)
    scores = probe.logits(x[150:])
    assert M.mean_auc(scores, y[150:]) > 0.97
    assert M.mean_average_precision(scores, y[150:]) > 0.9
    shuffled = P.fit_multilabel(x[:150], rng.permutation(y[:150]), weight_decay=1e-1)
    assert M.mean_auc(shuffled.logits(x[150:]), y[150:]) < 0.75


def test_fit_is_deterministic_and_selection_prefers_val_score() -> None:
    x, y = blobs(10, 3, 8, 4.0, seed=6)
    a = P.fit_softmax(x, y, 3, 1e-2)
    b = P.fit_softmax(x, y, 3, 1e-2)
    assert np.array_equal(a.weight.numpy(), b.weight.numpy())
    xv, yv = blobs(10, 3, 8, 4.0, seed=6)
    chosen = P.select(lambda wd: P.fit_softmax(x, y, 3, wd), [1e-4, 1e-2, 1.0], xv, yv, top1)
    assert [g["weight_decay"] for g in chosen.grid] == [1e-4, 1e-2, 1.0]
    best = max(g["val_score"] for g in chosen.grid)
    assert chosen.val_score == best
    tied = [g for g in chosen.grid if g["val_score"] == best]
    assert chosen.weight_decay == min(tied, key=lambda g: (g["val_loss"], -g["weight_decay"]))["weight_decay"]


def test_standardizer_handles_constant_dimensions() -> None:
    x = np.ones((5, 3))
    x[:, 0] = np.arange(5)
    s = P.Standardizer.fit(x)
    z = s(x)
    assert np.isfinite(z).all()
    assert np.allclose(z[:, 1:], 0)


def test_bad_inputs_raise_data_errors() -> None:
    with pytest.raises(DataError, match="class indices"):
        P.fit_softmax(np.zeros((3, 2)), np.array([0, 1, 5]), 3, 1e-3)
    with pytest.raises(DataError, match="non-finite|NaN"):
        P.fit_softmax(np.array([[np.nan, 0.0], [1.0, 1.0]]), np.array([0, 1]), 2, 1e-3)
    with pytest.raises(DataError, match="rows"):
        P.fit_multilabel(np.zeros((3, 2)), np.zeros((2, 2)), 1e-3)
