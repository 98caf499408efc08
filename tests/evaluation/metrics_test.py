"""Tests of supcon_tf.evaluation.metrics against explicit loops and hand-computed goldens."""

import numpy as np
import pytest
from keras import ops

from supcon_tf.evaluation import metrics


def _random_scores(seed, num_samples=40, num_classes=7):
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_classes, num_samples), rng.normal(size=(num_samples, num_classes))


# ----------------------------------------------------------------------------------------------
# top-k


def _naive_top_k(labels, scores, k):
    hits = 0
    for label, row in zip(labels, scores):
        ranked = sorted(range(len(row)), key=lambda c: -row[c])
        hits += label in ranked[:k]
    return hits / len(labels)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_top_k_matches_loop(seed, k):
    labels, scores = _random_scores(seed)
    assert metrics.top_k_accuracy(labels, scores, k) == pytest.approx(
        _naive_top_k(labels, scores, k))


def test_top_k_golden_with_ties():
    scores = np.array([[0.5, 0.5, 0.0],   # label 1 ties with class 0: counts as top-1
                       [0.1, 0.7, 0.2],   # label 2 is second: top-2 only
                       [0.3, 0.2, 0.1]])  # label 2 is last: top-3 only
    labels = np.array([1, 2, 2])
    assert metrics.top_k_correct(labels, scores, 1).tolist() == [True, False, False]
    assert metrics.top_k_accuracy(labels, scores, 1) == pytest.approx(1 / 3)
    assert metrics.top_k_accuracy(labels, scores, 2) == pytest.approx(2 / 3)
    assert metrics.top_k_accuracy(labels, scores, 3) == 1.0


@pytest.mark.parametrize("k", [1, 3])
def test_top_k_ops_matches_numpy(k):
    labels, scores = _random_scores(5)
    scores[0, :] = 0.25  # a full tie, correct for every k under both definitions
    expected = metrics.top_k_correct(labels, scores, k).astype(np.float32)
    got = ops.convert_to_numpy(metrics.top_k_correct_ops(labels, scores.astype(np.float32), k))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("labels, scores, k, match", [
    ([[0, 1]], np.zeros((1, 3)), 1, "1-D int"),
    ([0, 1], np.zeros((3, 3)), 1, "num_samples=2"),
    ([0, 1], np.zeros((2, 3)), 0, "k must be an int in"),
    ([0, 1], np.zeros((2, 3)), 4, "k must be an int in"),
    ([0, 3], np.zeros((2, 3)), 1, "labels must be < num_classes=3"),
    ([0, -1], np.zeros((2, 3)), 1, "labels must be >= 0"),
    ([0.5, 1], np.zeros((2, 3)), 1, "integer class ids"),
])
def test_top_k_bad_inputs(labels, scores, k, match):
    with pytest.raises(ValueError, match=match):
        metrics.top_k_accuracy(labels, scores, k)


def test_top_k_ops_bad_k():
    with pytest.raises(ValueError, match="k must be a positive int"):
        metrics.top_k_correct_ops([0], [[1.0, 2.0]], 0)


# ----------------------------------------------------------------------------------------------
# mean per-class accuracy


def _naive_mean_per_class(labels, predictions):
    recalls = []
    for cls in sorted(set(labels.tolist())):
        total = hits = 0
        for label, prediction in zip(labels, predictions):
            if label == cls:
                total += 1
                hits += prediction == cls
        recalls.append(hits / total)
    return sum(recalls) / len(recalls)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mean_per_class_matches_loop(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, 50)
    predictions = np.where(rng.random(50) < 0.6, labels, rng.integers(0, 6, 50))
    assert metrics.mean_per_class_accuracy(labels, predictions) == pytest.approx(
        _naive_mean_per_class(labels, predictions))


def test_mean_per_class_golden():
    # class 0: 2 of 3 right, class 1: 1 of 1 -> (2/3 + 1) / 2 = 5/6, while top-1 is 3/4.
    labels = np.array([0, 0, 0, 1])
    predictions = np.array([0, 0, 1, 1])
    assert metrics.mean_per_class_accuracy(labels, predictions) == pytest.approx(5 / 6)
    one_hot = np.eye(2)[predictions]
    assert metrics.mean_per_class_accuracy(labels, one_hot) == pytest.approx(5 / 6)
    assert metrics.score("mean_per_class", labels, one_hot) == pytest.approx(5 / 6)
    assert metrics.score("top1", labels, one_hot) == pytest.approx(3 / 4)


def test_per_class_accuracy_absent_class_is_nan_and_skipped():
    recalls = metrics.per_class_accuracy([0, 0, 2], [0, 1, 2], num_classes=4)
    np.testing.assert_allclose(recalls, [0.5, np.nan, 1.0, np.nan])
    assert metrics.mean_per_class_accuracy([0, 0, 2], [0, 1, 2], 4) == pytest.approx(0.75)


@pytest.mark.parametrize("labels, predictions, num_classes, match", [
    ([0, 1], [0], None, "labels' shape"),
    ([0, 1], [0, 5], 3, "num_classes=3"),
    ([], [], None, "0 samples"),
])
def test_mean_per_class_bad_inputs(labels, predictions, num_classes, match):
    with pytest.raises(ValueError, match=match):
        metrics.mean_per_class_accuracy(labels, predictions, num_classes)


# ----------------------------------------------------------------------------------------------
# 11-point mAP


def test_map_11point_hand_computed():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    # Class 0: targets 1, 0, IGNORE, 1, 0, 1. The ignored sample leaves the ranking, which is
    # 1 0 1 0 1 with 3 positives:
    #   rank:      1    2    3    4    5
    #   precision: 1/1  1/2  2/3  2/4  3/5
    #   recall:    1/3  1/3  2/3  2/3  3/3
    # t = 0, .1, .2, .3 -> max precision over all ranks = 1            (4 thresholds)
    # t = .4, .5, .6   -> ranks 3..5 (recall >= 2/3): max(2/3, 1/2, 3/5) = 2/3  (3 thresholds)
    # t = .7 ... 1     -> rank 5 only: 3/5                              (4 thresholds)
    # AP0 = (4 * 1 + 3 * 2/3 + 4 * 3/5) / 11 = 8.4 / 11
    ap0 = 8.4 / 11
    # Class 1: one positive, ranked second: precision 1/2 at recall 1 for all 11 thresholds.
    ap1 = 0.5
    targets = np.array([[1, 0], [0, 1], [metrics.IGNORE, 0], [1, 0], [0, 0], [1, 0]])
    both = np.stack([scores, scores], axis=1)
    np.testing.assert_allclose(metrics.per_class_ap_11point(targets, both), [ap0, ap1])
    assert metrics.map_11point(targets, both) == pytest.approx((ap0 + ap1) / 2)
    assert metrics.average_precision_11point(targets[:, 0], scores) == pytest.approx(ap0)
    # Counting the difficult sample as a negative instead: ranking 1 0 0 1 0 1, a lower AP.
    as_negative = np.where(targets[:, 0] == metrics.IGNORE, 0, targets[:, 0])
    assert metrics.average_precision_11point(as_negative, scores) < ap0


def test_map_11point_recall_on_a_threshold():
    # 10 positives, all ranked first: recall 7/10 must meet the t = 0.7 threshold -> AP = 1.
    targets = np.array([1] * 10 + [0] * 5)
    scores = -np.arange(15.0)
    assert metrics.average_precision_11point(targets, scores) == 1.0


def _naive_ap_11point(targets, scores):
    ranked = [t for _, t in sorted(zip(-scores, targets)) if t != metrics.IGNORE]
    num_positives = sum(1 for t in ranked if t == 1)
    total = 0.0
    for step in range(11):
        threshold = step / 10
        best = 0.0
        for rank in range(1, len(ranked) + 1):
            hits = sum(1 for t in ranked[:rank] if t == 1)
            if hits / num_positives >= threshold:
                best = max(best, hits / rank)
        total += best
    return total / 11


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_11point_matches_loop(seed):
    rng = np.random.default_rng(seed)
    targets = rng.choice([1, 0, 0, 0, metrics.IGNORE], size=(30, 4))
    targets[0] = 1  # every class has a positive
    scores = rng.normal(size=(30, 4))  # distinct scores: no tie order to agree on
    expected = [_naive_ap_11point(targets[:, c], scores[:, c]) for c in range(4)]
    np.testing.assert_allclose(metrics.per_class_ap_11point(targets, scores), expected)
    assert metrics.map_11point(targets, scores) == pytest.approx(np.mean(expected))
    assert metrics.score("map_11point", targets, scores) == pytest.approx(np.mean(expected))


def test_map_11point_skips_class_without_positive():
    targets = np.array([[1, 0], [0, 0]])
    scores = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert np.isnan(metrics.per_class_ap_11point(targets, scores)[1])
    assert metrics.map_11point(targets, scores) == 1.0


@pytest.mark.parametrize("targets, scores, match", [
    ([1, 0], [[0.1], [0.2]], "targets must be int"),
    ([[1, 0]], [[0.1, 0.2, 0.3]], "targets' shape"),
    ([[1, 2]], [[0.1, 0.2]], "only 1, 0 or -1"),
    ([[0, 0]], [[0.1, 0.2]], "no class has a positive"),
])
def test_map_11point_bad_inputs(targets, scores, match):
    with pytest.raises(ValueError, match=match):
        metrics.map_11point(targets, scores)


def test_average_precision_bad_shapes():
    with pytest.raises(ValueError, match="both be 1-D"):
        metrics.average_precision_11point([1, 0], [0.1])


def test_voc_targets():
    targets = metrics.voc_targets([[0, 2], [1], []], [[2], [1], []], num_classes=3)
    np.testing.assert_array_equal(targets, [[metrics.IGNORE, 0, 1], [0, 1, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="same length"):
        metrics.voc_targets([[0]], [], 3)
    with pytest.raises(ValueError, match=r"class ids must be in \[0, 3\)"):
        metrics.voc_targets([[3]], [[3]], 3)


def test_unknown_metric():
    with pytest.raises(ValueError, match="Unknown metric 'top5'; use one of top1"):
        metrics.score("top5", [0], [[1.0]])
