"""Tests of supcon_tf.evaluation.few_shot against direct scikit-learn fits."""

import numpy as np
import pytest
import threadpoolctl
from sklearn import linear_model

from supcon_tf.evaluation import few_shot
from helpers import chance_accuracy
from helpers import sklearn_digits_splits


@pytest.fixture(scope="module")
def digits():
    return sklearn_digits_splits()


def test_few_shot_indices_have_exactly_shots_per_class_and_repeat_with_the_seed():
    labels = np.repeat(np.arange(4), [9, 6, 5, 12])
    draws = few_shot.few_shot_indices(labels, shots=5, draws=6, seed=11)
    assert draws.shape == (6, 20)
    for row in draws:
        assert len(set(row.tolist())) == 20  # no repeats within a draw
        assert np.bincount(labels[row], minlength=4).tolist() == [5, 5, 5, 5]
    np.testing.assert_array_equal(draws, few_shot.few_shot_indices(labels, 5, 6, seed=11))
    assert not np.array_equal(draws, few_shot.few_shot_indices(labels, 5, 6, seed=12))
    assert len({tuple(row) for row in draws}) > 1  # the draws differ from each other


@pytest.mark.parametrize("shots, draws, match", [
    (6, 1, "class 2 has 5 samples, fewer than shots=6"),
    (0, 1, "shots must be a positive int; received 0"),
    (1, 0, "draws must be a positive int; received 0"),
])
def test_few_shot_indices_bad_arguments(shots, draws, match):
    labels = np.repeat(np.arange(3), [9, 6, 5])
    with pytest.raises(ValueError, match=match):
        few_shot.few_shot_indices(labels, shots, draws)


def test_few_shot_probe_matches_direct_fits(digits):
    (train_x, train_y), (test_x, test_y) = digits["train"], digits["test"]
    result = few_shot.few_shot_probe(train_x, train_y, test_x, test_y, shots=5, draws=3, seed=7,
                                     l2_lambda=1e-2)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    expected = []
    for chosen in few_shot.few_shot_indices(train_y, 5, 3, seed=7):
        with threadpoolctl.threadpool_limits(1):
            model = linear_model.LogisticRegression(C=1.0 / (1e-2 * 50), max_iter=1000).fit(
                unit(train_x)[chosen], train_y[chosen])
        expected.append(np.mean(model.predict(unit(test_x)) == test_y))
    np.testing.assert_allclose(result.accuracies, expected, atol=1.01 / len(test_y))
    assert result.mean == pytest.approx(np.mean(result.accuracies))
    assert result.std == pytest.approx(np.std(result.accuracies))
    assert result.mean > 5 * chance_accuracy(test_y)  # ten classes: chance is about 0.1
    again = few_shot.few_shot_probe(train_x, train_y, test_x, test_y, shots=5, draws=3, seed=7,
                                    l2_lambda=1e-2)
    np.testing.assert_array_equal(result.accuracies, again.accuracies)
    assert result.to_dict()["shots"] == 5


def test_few_shot_probe_bad_shapes():
    with pytest.raises(ValueError, match="test_x must have train_x's dim 2; received 3"):
        few_shot.few_shot_probe(np.zeros((4, 2)), [0, 0, 1, 1], np.zeros((1, 3)), [0], shots=1,
                                draws=1)
