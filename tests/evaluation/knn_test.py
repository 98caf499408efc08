"""Tests of supcon_tf.evaluation.knn against a naive loop and a hand-checked golden."""

import numpy as np
import pytest

from supcon_tf.evaluation import knn


def _naive_knn_votes(train_x, train_y, query_x, k, temperature, num_classes):
    votes = np.zeros((len(query_x), num_classes))
    for row, query in enumerate(query_x):
        similarities = []
        for index, sample in enumerate(train_x):
            cosine = float(query @ sample) / (np.linalg.norm(query) * np.linalg.norm(sample))
            similarities.append((cosine, index))
        similarities.sort(reverse=True)
        for cosine, index in similarities[:k]:
            votes[row, train_y[index]] += 1.0 if temperature is None else np.exp(
                cosine / temperature)
    return votes


@pytest.mark.parametrize("k", [1, 5, 20])
@pytest.mark.parametrize("temperature", [0.1, 0.5, None])
def test_knn_matches_naive_loop(k, temperature):
    rng = np.random.default_rng(k)
    centers = rng.normal(size=(4, 8))
    train_y = rng.integers(0, 4, 60)
    test_y = rng.integers(0, 4, 25)
    train_x = centers[train_y] + rng.normal(scale=1.5, size=(60, 8))
    test_x = centers[test_y] + rng.normal(scale=1.5, size=(25, 8))
    votes = knn.knn_scores(train_x, train_y, test_x, k=k, temperature=temperature,
                           chunk_size=7)
    expected = _naive_knn_votes(train_x, train_y, test_x, k, temperature, 4)
    np.testing.assert_allclose(votes, expected, rtol=1e-10)
    accuracy = knn.knn_accuracy(train_x, train_y, test_x, test_y, k=k,
                                temperature=temperature, chunk_size=7)
    assert accuracy == pytest.approx(np.mean(np.argmax(expected, axis=1) == test_y))


def test_knn_golden():
    # Query (1, 0.1) is most similar to (1, 0) [class 0] and (2, 1) [class 1], then (0, 1).
    train_x = np.array([[1.0, 0.0], [2.0, 1.0], [0.0, 1.0]])
    train_y = np.array([0, 1, 1])
    query = np.array([[1.0, 0.1]])
    assert knn.knn_scores(train_x, train_y, query, k=1, temperature=None).tolist() == [
        [1.0, 0.0]]
    # k=3 majority: class 1 has two votes.
    assert knn.knn_accuracy(train_x, train_y, query, [1], k=3, temperature=None) == 1.0


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 0}, "k must be a positive int; received 0"),
    ({"k": 7}, "k must be <= num_train=6; received 7"),
    ({"k": 1, "temperature": 0.0}, "temperature must be > 0 or None; received 0.0"),
    ({"k": 1, "chunk_size": -1}, "chunk_size must be a positive int"),
])
def test_knn_bad_arguments(kwargs, match):
    features = np.eye(6)
    labels = np.arange(6) % 2
    with pytest.raises(ValueError, match=match):
        knn.knn_accuracy(features, labels, features, labels, **kwargs)


def test_knn_bad_shapes():
    with pytest.raises(ValueError, match="query_x must have train_x's dim 3; received 2"):
        knn.knn_scores(np.eye(3), [0, 1, 2], np.zeros((1, 2)), k=1)
