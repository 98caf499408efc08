"""Tests of supcon_tf.evaluation.linear_probe against direct scikit-learn searches."""

import numpy as np
import pytest
import threadpoolctl
from sklearn import linear_model
from sklearn import model_selection

from supcon_tf.evaluation import linear_probe
from supcon_tf.evaluation import metrics
from helpers import sklearn_digits_splits


@pytest.fixture(scope="module")
def digits():
    return sklearn_digits_splits()


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
    result = linear_probe.lbfgs_logistic_sweep(train_x, train_y, val_x, val_y, test_x, test_y,
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
    assert linear_probe.lambda_to_c(0.01, 200) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="l2_lambda must be > 0; received 0"):
        linear_probe.lambda_to_c(0, 10)


def test_sweep_multilabel_matches_per_class_loop():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(150, 6))
    weights = rng.normal(size=(6, 3))
    targets = (features @ weights + rng.normal(scale=1.5, size=(150, 3)) > 0.5).astype(int)
    targets[rng.random(targets.shape) < 0.1] = metrics.IGNORE
    lambdas = np.array([1e-3, 1e-1, 1.0, 10.0])
    split = {"train": slice(0, 60), "val": slice(60, 100), "test": slice(100, 150)}
    result = linear_probe.lbfgs_logistic_sweep(
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
        linear_probe.lbfgs_logistic_sweep(features, labels, features, labels, features, labels,
                                          **kwargs)


def test_sweep_bad_shapes():
    features = np.zeros((4, 3))
    labels = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="val_x must have train_x's dim 3; received 2"):
        linear_probe.lbfgs_logistic_sweep(features, labels, np.zeros((4, 2)), labels, features,
                                          labels)
    with pytest.raises(ValueError, match=r"train_y must be int \[num_samples=4\]"):
        linear_probe.lbfgs_logistic_sweep(features, labels[:3], features, labels, features, labels)
    with pytest.raises(ValueError, match="train_x must be float"):
        linear_probe.lbfgs_logistic_sweep(np.zeros(4), labels, features, labels, features, labels)
    with pytest.raises(ValueError, match=">= 2 classes"):
        linear_probe.lbfgs_logistic_sweep(features, np.zeros(4, int), features, labels, features,
                                          labels, lambdas=[1.0])


def test_stratified_holdout():
    labels = np.repeat(np.arange(3), [10, 5, 1])
    train, val = linear_probe.stratified_holdout(labels, fraction=0.2, seed=3)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(16))
    assert np.bincount(labels[val], minlength=3).tolist() == [2, 1, 0]
    again = linear_probe.stratified_holdout(labels, fraction=0.2, seed=3)
    assert np.array_equal(val, again[1])
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\); received 1.5"):
        linear_probe.stratified_holdout(labels, fraction=1.5)
