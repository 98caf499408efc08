"""Tests of supcon_tf.evaluation.probes against direct scikit-learn searches and naive loops."""

import numpy as np
import pytest
import threadpoolctl
from sklearn import datasets
from sklearn import linear_model
from sklearn import model_selection

from supcon_tf.evaluation import metrics
from supcon_tf.evaluation import probes


@pytest.fixture(scope="module")
def digits():
    """sklearn's 8x8 digits, shuffled once: 600 train, 300 val, the rest test."""
    features, labels = datasets.load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(labels.size)
    features, labels = features[order], labels[order]
    return {"train": (features[:600], labels[:600]), "val": (features[600:900], labels[600:900]),
            "test": (features[900:], labels[900:])}


def _direct_search(train_x, train_y, val_x, val_y, lambdas, scoring):
    """scikit-learn's own search on the fixed train/val split (independent of the probe code).

    Features are standardised with train statistics by hand; LogisticRegressionCV fits the
    train part of the PredefinedSplit with each C and scores the val part. C = 1/(lambda * n)
    is the mean-loss convention; Cs go from the largest lambda down, so sklearn's first-argmax
    tie rule keeps the largest lambda, as the probe documents.
    """
    mean, scale = train_x.mean(0), train_x.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    both_x = (np.concatenate([train_x, val_x]) - mean) / scale
    both_y = np.concatenate([train_y, val_y])
    fold = model_selection.PredefinedSplit([-1] * len(train_y) + [0] * len(val_y))
    descending = np.sort(lambdas)[::-1]
    search = linear_model.LogisticRegressionCV(
        Cs=[1.0 / (lam * len(train_y)) for lam in descending], cv=fold, l1_ratios=(0.0,),
        scoring=scoring, solver="lbfgs", max_iter=1000, refit=False,
        use_legacy_attributes=False)
    with threadpoolctl.threadpool_limits(1):
        search.fit(both_x, both_y)
    val_scores = np.asarray(search.scores_).reshape(-1)
    return descending[int(np.argmax(val_scores))], val_scores[::-1]


@pytest.mark.parametrize("metric, scoring", [("top1", "accuracy"),
                                             ("mean_per_class", "balanced_accuracy")])
def test_sweep_picks_the_lambda_of_a_direct_sklearn_search(digits, metric, scoring):
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (
        digits["train"], digits["val"], digits["test"])
    lambdas = np.logspace(-6, 5, 45)
    result = probes.lbfgs_logistic_sweep(train_x, train_y, val_x, val_y, test_x, test_y,
                                         lambdas=lambdas, metric=metric)
    expected_lambda, expected_scores = _direct_search(train_x, train_y, val_x, val_y, lambdas,
                                                      scoring)
    assert result.best_lambda == pytest.approx(expected_lambda)
    # Per-lambda validation scores agree within one validation sample.
    np.testing.assert_allclose(result.val_scores, expected_scores, atol=1.01 / len(val_y))
    assert result.val_scores.max() == pytest.approx(expected_scores.max())

    # Refit on train+val with the same lambda (C = 1/(lambda * 900)), standardised by hand.
    both_x = np.concatenate([train_x, val_x])
    both_y = np.concatenate([train_y, val_y])
    mean, scale = both_x.mean(0), both_x.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    with threadpoolctl.threadpool_limits(1):
        refit = linear_model.LogisticRegression(
            C=1.0 / (result.best_lambda * len(both_y)), max_iter=1000).fit(
                (both_x - mean) / scale, both_y)
    predictions = refit.predict((test_x - mean) / scale)
    if metric == "top1":
        expected_test = np.mean(predictions == test_y)
    else:
        expected_test = np.mean([np.mean(predictions[test_y == c] == c) for c in range(10)])
    assert result.test_score == pytest.approx(expected_test, abs=1.01 / len(test_y))
    assert result.test_scores.shape == (len(test_y), 10)
    assert result.to_dict()["best_lambda"] == result.best_lambda


def test_lambda_to_c_matches_mean_loss_objective():
    # sklearn minimises C * sum(loss) + ||W||^2 / 2 = (mean(loss) + lambda/2 ||W||^2) / lambda.
    assert probes.lambda_to_c(0.01, 200) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="l2_lambda must be > 0; received 0"):
        probes.lambda_to_c(0, 10)


def test_sweep_multilabel_matches_per_class_loop():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(150, 6))
    weights = rng.normal(size=(6, 3))
    targets = (features @ weights + rng.normal(scale=1.5, size=(150, 3)) > 0.5).astype(int)
    targets[rng.random(targets.shape) < 0.1] = metrics.IGNORE
    lambdas = np.array([1e-3, 1e-1, 1.0, 10.0])
    split = {"train": slice(0, 60), "val": slice(60, 100), "test": slice(100, 150)}
    result = probes.lbfgs_logistic_sweep(
        features[split["train"]], targets[split["train"]], features[split["val"]],
        targets[split["val"]], features[split["test"]], targets[split["test"]],
        lambdas=lambdas, metric="map_11point", standardize=False)

    def fit_scores(fit_x, fit_y, score_x, lam):
        columns = []
        for cls in range(3):
            keep = fit_y[:, cls] != metrics.IGNORE
            model = linear_model.LogisticRegression(C=1.0 / (lam * keep.sum()), max_iter=1000)
            columns.append(model.fit(fit_x[keep], fit_y[keep, cls]).decision_function(score_x))
        return np.stack(columns, axis=1)

    # n in C is each class's own number of non-ignored rows: the probe fits per class.
    expected = [metrics.map_11point(targets[split["val"]], fit_scores(
        features[split["train"]], targets[split["train"]], features[split["val"]], lam))
        for lam in lambdas]
    np.testing.assert_allclose(result.val_scores, expected, atol=1e-6)
    best = lambdas[np.flatnonzero(np.isclose(expected, max(expected)))[-1]]
    assert result.best_lambda == pytest.approx(best)


@pytest.mark.parametrize("kwargs, match", [
    ({"metric": "top5"}, "Unknown metric 'top5'"),
    ({"lambdas": [1.0, -1.0]}, "lambdas must be a non-empty list of positive floats"),
    ({"lambdas": []}, "lambdas must be a non-empty list"),
    ({"num_classes": 2}, "labels must be < num_classes=2"),
    ({"max_iter": 0}, "max_iter must be a positive int"),
    ({"metric": "map_11point"}, r"train_y must be int \[num_samples=6, num_classes\]"),
])
def test_sweep_bad_arguments(kwargs, match):
    features = np.arange(12.0).reshape(6, 2)
    labels = np.array([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match=match):
        probes.lbfgs_logistic_sweep(features, labels, features, labels, features, labels,
                                    **kwargs)


def test_sweep_bad_shapes():
    features = np.zeros((4, 3))
    labels = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="val_x must have train_x's dim 3; received 2"):
        probes.lbfgs_logistic_sweep(features, labels, np.zeros((4, 2)), labels, features, labels)
    with pytest.raises(ValueError, match=r"train_y must be int \[num_samples=4\]"):
        probes.lbfgs_logistic_sweep(features, labels[:3], features, labels, features, labels)
    with pytest.raises(ValueError, match="train_x must be float"):
        probes.lbfgs_logistic_sweep(np.zeros(4), labels, features, labels, features, labels)
    with pytest.raises(ValueError, match=">= 2 classes"):
        probes.lbfgs_logistic_sweep(features, np.zeros(4, int), features, labels, features,
                                    labels, lambdas=[1.0])


def test_stratified_holdout():
    labels = np.repeat(np.arange(3), [10, 5, 1])
    train, val = probes.stratified_holdout(labels, fraction=0.2, seed=3)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(16))
    assert np.bincount(labels[val], minlength=3).tolist() == [2, 1, 0]
    again = probes.stratified_holdout(labels, fraction=0.2, seed=3)
    assert np.array_equal(val, again[1])
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\); received 1.5"):
        probes.stratified_holdout(labels, fraction=1.5)


# ----------------------------------------------------------------------------------------------
# kNN


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
    votes = probes.knn_scores(train_x, train_y, test_x, k=k, temperature=temperature,
                              chunk_size=7)
    expected = _naive_knn_votes(train_x, train_y, test_x, k, temperature, 4)
    np.testing.assert_allclose(votes, expected, rtol=1e-10)
    accuracy = probes.knn_accuracy(train_x, train_y, test_x, test_y, k=k,
                                   temperature=temperature, chunk_size=7)
    assert accuracy == pytest.approx(np.mean(np.argmax(expected, axis=1) == test_y))


def test_knn_golden():
    # Query (1, 0.1) is most similar to (1, 0) [class 0] and (2, 1) [class 1], then (0, 1).
    train_x = np.array([[1.0, 0.0], [2.0, 1.0], [0.0, 1.0]])
    train_y = np.array([0, 1, 1])
    query = np.array([[1.0, 0.1]])
    assert probes.knn_scores(train_x, train_y, query, k=1, temperature=None).tolist() == [
        [1.0, 0.0]]
    # k=3 majority: class 1 has two votes.
    assert probes.knn_accuracy(train_x, train_y, query, [1], k=3, temperature=None) == 1.0


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
        probes.knn_accuracy(features, labels, features, labels, **kwargs)


def test_knn_bad_shapes():
    with pytest.raises(ValueError, match="query_x must have train_x's dim 3; received 2"):
        probes.knn_scores(np.eye(3), [0, 1, 2], np.zeros((1, 2)), k=1)


# ----------------------------------------------------------------------------------------------
# few-shot


def test_few_shot_indices_have_exactly_shots_per_class_and_repeat_with_the_seed():
    labels = np.repeat(np.arange(4), [9, 6, 5, 12])
    draws = probes.few_shot_indices(labels, shots=5, draws=6, seed=11)
    assert draws.shape == (6, 20)
    for row in draws:
        assert len(set(row.tolist())) == 20  # no repeats within a draw
        assert np.bincount(labels[row], minlength=4).tolist() == [5, 5, 5, 5]
    np.testing.assert_array_equal(draws, probes.few_shot_indices(labels, 5, 6, seed=11))
    assert not np.array_equal(draws, probes.few_shot_indices(labels, 5, 6, seed=12))
    assert len({tuple(row) for row in draws}) > 1  # the draws differ from each other


@pytest.mark.parametrize("shots, draws, match", [
    (6, 1, "class 2 has 5 samples, fewer than shots=6"),
    (0, 1, "shots must be a positive int; received 0"),
    (1, 0, "draws must be a positive int; received 0"),
])
def test_few_shot_indices_bad_arguments(shots, draws, match):
    labels = np.repeat(np.arange(3), [9, 6, 5])
    with pytest.raises(ValueError, match=match):
        probes.few_shot_indices(labels, shots, draws)


def test_few_shot_probe_matches_direct_fits(digits):
    (train_x, train_y), (test_x, test_y) = digits["train"], digits["test"]
    result = probes.few_shot_probe(train_x, train_y, test_x, test_y, shots=5, draws=3, seed=7,
                                   l2_lambda=1e-2)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    expected = []
    for chosen in probes.few_shot_indices(train_y, 5, 3, seed=7):
        with threadpoolctl.threadpool_limits(1):
            model = linear_model.LogisticRegression(C=1.0 / (1e-2 * 50), max_iter=1000).fit(
                unit(train_x)[chosen], train_y[chosen])
        expected.append(np.mean(model.predict(unit(test_x)) == test_y))
    np.testing.assert_allclose(result.accuracies, expected, atol=1.01 / len(test_y))
    assert result.mean == pytest.approx(np.mean(result.accuracies))
    assert result.std == pytest.approx(np.std(result.accuracies))
    assert 0.6 < result.mean <= 1.0
    again = probes.few_shot_probe(train_x, train_y, test_x, test_y, shots=5, draws=3, seed=7,
                                  l2_lambda=1e-2)
    np.testing.assert_array_equal(result.accuracies, again.accuracies)
    assert result.to_dict()["shots"] == 5


def test_few_shot_probe_bad_shapes():
    with pytest.raises(ValueError, match="test_x must have train_x's dim 2; received 3"):
        probes.few_shot_probe(np.zeros((4, 2)), [0, 0, 1, 1], np.zeros((1, 3)), [0], shots=1,
                              draws=1)


# ----------------------------------------------------------------------------------------------
# SGD probe


def test_sgd_linear_probe_learns_a_separable_problem():
    rng = np.random.default_rng(0)
    centers = 4.0 * np.eye(3, 5)
    train_y = rng.integers(0, 3, 120)
    test_y = rng.integers(0, 3, 60)
    train_x = centers[train_y] + rng.normal(size=(120, 5))
    test_x = centers[test_y] + rng.normal(size=(60, 5))
    result = probes.sgd_linear_probe(train_x, train_y, test_x, test_y, epochs=10, batch_size=32,
                                     learning_rate=0.1, optimizer="nesterov", schedule="cosine")
    assert result.top1 >= 0.9
    assert result.top5 == 1.0  # top-min(5, 3)
    logits = result.model.predict(test_x.astype(np.float32), verbose=0)
    assert result.top1 == pytest.approx(np.mean(np.argmax(logits, 1) == test_y))


def test_sgd_linear_probe_bad_arguments():
    features = np.zeros((4, 2))
    labels = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="epochs must be a positive int; received 0"):
        probes.sgd_linear_probe(features, labels, features, labels, epochs=0)
    with pytest.raises(ValueError, match="Unknown optimizer 'adagrad'"):
        probes.sgd_linear_probe(features, labels, features, labels, optimizer="adagrad")
