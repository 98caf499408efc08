"""Probes on frozen features: the L-BFGS logistic-regression sweep, kNN, few-shot and SGD probes.

Every probe takes numpy feature matrices (e.g. `SupConModel.predict(images)`, float
`[num_samples, dim]`) and labels, and never touches the encoder.

* `lbfgs_logistic_sweep`: the linear-evaluation protocol of Kornblith et al. (2019), used by
  SimCLR and SupCon for transfer (reference/transfer.md): L2-regularised multinomial logistic
  regression fitted with L-BFGS for each of 45 log-spaced lambdas in [1e-6, 1e5], lambda chosen
  on a validation split by the benchmark's metric, refit on train+validation, scored on test.
* `knn_accuracy`: cosine k-nearest-neighbour classification (Wu et al. 2018 weighted vote, or
  plain majority vote), chunked over the queries.
* `few_shot_probe`: logistic regression on `shots` labelled examples per class, mean and std of
  the test accuracy over `draws` seeded draws.
* `sgd_linear_probe`: a Keras `Dense` classifier trained on frozen features with the paper's
  stage-2 optimizers and schedules (`optimizers.build_optimizer(..., stage=2)`).
* `stratified_holdout`: a seeded per-class validation split cut from train, for the benchmarks
  without an official validation set.

Regularisation convention (all logistic probes). The objective is

    L(W, b) = 1/n * sum_i -log softmax(W x_i + b)[y_i]  +  lambda / 2 * ||W||_F^2,

mean cross-entropy over the n training samples plus an L2 penalty on the weights (the bias is not
penalised). scikit-learn minimises `C * sum_i loss_i + 1/2 ||W||^2`, the same objective divided
by lambda when

    C = 1 / (lambda * n).

So a given lambda means the same regularisation whatever the training-set size, and the refit on
train+validation keeps the chosen lambda (its C shrinks with the larger n).
"""

import contextlib
import dataclasses
import warnings

import numpy as np
import threadpoolctl
from sklearn import exceptions as sklearn_exceptions
from sklearn import linear_model

from supcon_tf.evaluation import metrics

DEFAULT_LAMBDAS = np.logspace(-6, 5, 45)  # Kornblith et al. 2019: 45 values in [1e-6, 1e5]
DEFAULT_MAX_ITER = 1000
# Fits on at most this many feature values (n * dim) run BLAS/OpenMP on one thread: for small
# problems thread start-up and spinning cost more than they save, badly so on a loaded machine.
SINGLE_THREAD_MAX_VALUES = 1 << 20


# ----------------------------------------------------------------------------------------------
# input checks and shared helpers


def _as_features(features, name):
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"{name} must be float [num_samples > 0, dim]; received shape "
                         f"{features.shape}. Flatten or pool the encoder output first.")
    if not np.all(np.isfinite(features)):
        raise ValueError(f"{name} holds NaN or inf values; check the encoder output.")
    return features.astype(np.float64, copy=False)


def _as_class_ids(labels, num_samples, name):
    labels = np.asarray(labels)
    if labels.shape != (num_samples,):
        raise ValueError(f"{name} must be int [num_samples={num_samples}]; received shape "
                         f"{labels.shape}. Pass one class id per feature row.")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"{name} must hold class ids >= 0; received dtype {labels.dtype}, "
                         f"minimum {labels.min()}. Pass integer labels.")
    return labels.astype(np.int64)


def _as_multilabel(targets, num_samples, name):
    targets = np.asarray(targets)
    if targets.ndim != 2 or targets.shape[0] != num_samples:
        raise ValueError(f"{name} must be int [num_samples={num_samples}, num_classes] of 1 / 0 / "
                         f"{metrics.IGNORE}; received shape {targets.shape}.")
    bad = ~np.isin(targets, (1, 0, metrics.IGNORE))
    if np.any(bad):
        raise ValueError(f"{name} must hold only 1, 0 or {metrics.IGNORE}; received "
                         f"{targets[bad][0]!r}. Mark difficult-only labels with {metrics.IGNORE}.")
    return targets.astype(np.int64)


def _check_positive_int(name, value, fix):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int; received {value!r}. {fix}")
    return int(value)


def l2_normalize(features, epsilon=1e-12):
    """Rows divided by their L2 norm (a zero row stays zero).

    Args:
        features: float [num_samples, dim].
        epsilon: floor on the norm.

    Returns:
        float64 [num_samples, dim] with unit rows.
    """
    features = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, epsilon)


def _standardizer(features):
    """Mean and scale of each feature; a constant feature gets scale 1 (it stays 0)."""
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    return mean, np.where(scale > 0, scale, 1.0)


def _thread_limit(features):
    if features.size <= SINGLE_THREAD_MAX_VALUES:
        return threadpoolctl.threadpool_limits(limits=1)
    return contextlib.nullcontext()


def lambda_to_c(l2_lambda, num_train):
    """scikit-learn's C for the mean-loss objective `mean CE + lambda/2 ||W||^2` on n samples.

    Args:
        l2_lambda: Python float > 0.
        num_train: Python int > 0, the number of training samples of the fit.

    Returns:
        Python float, `1 / (l2_lambda * num_train)`.
    """
    if not l2_lambda > 0:
        raise ValueError(f"l2_lambda must be > 0; received {l2_lambda!r}. Pass a positive "
                         "penalty such as 1e-3.")
    return 1.0 / (float(l2_lambda) * num_train)


# ----------------------------------------------------------------------------------------------
# the fitted logistic-regression probe (multiclass softmax, or one-vs-rest for multi-label)


class _LogisticProbe:
    """L-BFGS logistic regression; warm-startable across a lambda path.

    Multiclass labels int [n] -> one multinomial model. Multi-label targets [n, num_classes] of
    1 / 0 / IGNORE -> one binary model per class on its non-ignored rows (a class whose rows are
    all one value gets a constant score).
    """

    def __init__(self, num_classes, multilabel, max_iter, tol, warm_start):
        self.num_classes = num_classes
        self.multilabel = multilabel
        self.max_iter = max_iter
        self.tol = tol
        self.warm_start = warm_start
        self._models = None
        self._constants = None  # per model: None, or the constant score of a one-valued class

    def _new_model(self):
        return linear_model.LogisticRegression(
            C=1.0, l1_ratio=0.0, solver="lbfgs", max_iter=self.max_iter, tol=self.tol,
            warm_start=self.warm_start)

    def fit(self, features, labels, l2_lambda):
        columns = range(self.num_classes) if self.multilabel else [None]
        if self._models is None or not self.warm_start:
            self._models = [self._new_model() for _ in columns]
        self._constants = [None] * len(self._models)
        with warnings.catch_warnings(), _thread_limit(features):
            # Tiny lambdas can hit max_iter; the sweep then scores the iterate it reached.
            warnings.simplefilter("ignore", sklearn_exceptions.ConvergenceWarning)
            for index, (model, column) in enumerate(zip(self._models, columns)):
                if column is None:
                    rows, target = slice(None), labels
                else:
                    rows = labels[:, column] != metrics.IGNORE
                    target = labels[rows, column]
                if np.unique(target).size < 2:
                    if column is None:
                        raise ValueError(f"the probe needs >= 2 classes in its training labels; "
                                         f"received only {np.unique(target).tolist()}. Pass "
                                         "a training set with several classes.")
                    self._constants[index] = 1.0 if target.size and target[0] == 1 else -1.0
                    continue
                # n in C is the number of rows this model is fitted on (its non-ignored rows).
                model.set_params(C=lambda_to_c(l2_lambda, target.size))
                model.fit(features[rows], target)
        return self

    def scores(self, features):
        """float [num_samples, num_classes]: log-probabilities (multiclass, -inf for classes
        never seen in training) or per-class decision values (multi-label)."""
        if self.multilabel:
            columns = []
            for model, constant in zip(self._models, self._constants):
                if constant is not None:
                    columns.append(np.full(features.shape[0], constant))
                else:
                    columns.append(model.decision_function(features))
            return np.stack(columns, axis=1)
        model = self._models[0]
        out = np.full((features.shape[0], self.num_classes), -np.inf)
        out[:, model.classes_] = model.predict_log_proba(features)
        return out


# ----------------------------------------------------------------------------------------------
# L-BFGS sweep


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """Outcome of `lbfgs_logistic_sweep`.

    Attributes:
        metric: the metric name used for selection and test (`metrics.METRICS`).
        best_lambda: Python float, the lambda chosen on validation.
        lambdas: float64 [num_lambdas], ascending.
        val_scores: float64 [num_lambdas], validation metric per lambda (same order).
        test_score: Python float, the test metric of the model refit on train+val.
        test_scores: float64 [num_test, num_classes], that model's test class scores.
    """
    metric: str
    best_lambda: float
    lambdas: np.ndarray
    val_scores: np.ndarray
    test_score: float
    test_scores: np.ndarray = dataclasses.field(repr=False)

    def to_dict(self):
        """JSON-friendly summary (no per-sample scores)."""
        return {"metric": self.metric, "best_lambda": self.best_lambda,
                "lambdas": self.lambdas.tolist(), "val_scores": self.val_scores.tolist(),
                "test_score": self.test_score}


def lbfgs_logistic_sweep(train_x, train_y, val_x, val_y, test_x, test_y, *,
                         lambdas=DEFAULT_LAMBDAS, metric="top1", num_classes=None,
                         standardize=True, max_iter=DEFAULT_MAX_ITER, tol=1e-4,
                         warm_start=True):
    """Kornblith et al. (2019) linear probe: lambda sweep on validation, refit on train+val.

    For each lambda (see the module docstring: objective `mean CE + lambda/2 ||W||^2`, scikit-learn
    `C = 1 / (lambda * n_train)`, bias unpenalised) a logistic regression is fitted with L-BFGS on
    train and scored on val with `metric`. The lambda with the best validation score wins; ties go
    to the largest (most regularised) lambda. The model is then refitted with that lambda on
    train+val and scored on test.

    Multiclass labels (int [n]) fit one multinomial (softmax) model. Multi-label targets (int
    [n, num_classes] of 1 / 0 / `metrics.IGNORE`, for "map_11point" / VOC2007) fit one binary
    model per class on its non-ignored rows (n in C is that class's number of such rows), scored
    by decision value.

    Standardisation (`standardize=True`): each feature is z-scored with the mean and standard
    deviation of the data the model is fitted on (train during the sweep, train+val for the refit),
    and the same affine map is applied to the data it scores; a constant feature is left centred.
    This only rescales the problem L-BFGS sees (lambda then acts on standardised weights); pass
    False for features used as given.

    The sweep visits lambdas from largest to smallest; with `warm_start` each fit starts from the
    previous solution (the strongly regularised fits converge in few iterations and make good
    starts). Fits that reach `max_iter` without converging are scored as they are (the
    ConvergenceWarning is silenced).

    Args:
        train_x: float [num_train, dim] frozen features.
        train_y: int [num_train] class ids, or int [num_train, num_classes] multi-label targets.
        val_x: float [num_val, dim].
        val_y: like `train_y`, [num_val].
        test_x: float [num_test, dim].
        test_y: like `train_y`, [num_test].
        lambdas: 1-D positive floats; default 45 log-spaced values in [1e-6, 1e5].
        metric: "top1", "mean_per_class" or "map_11point" (`metrics.METRICS`).
        num_classes: optional Python int; defaults to the largest class id + 1 (multiclass) or
            the targets' width (multi-label).
        standardize: Python bool, z-score features as described above.
        max_iter: Python int > 0, L-BFGS iterations per fit.
        tol: Python float > 0, L-BFGS tolerance.
        warm_start: Python bool, start each fit of the path from the previous solution.

    Returns:
        A `SweepResult`.

    Raises:
        ValueError: mismatched shapes, bad labels for the metric, non-positive lambdas, or an
            unknown metric (each message names the fix).
    """
    metrics.check_metric(metric)
    train_x = _as_features(train_x, "train_x")
    val_x = _as_features(val_x, "val_x")
    test_x = _as_features(test_x, "test_x")
    for name, features in (("val_x", val_x), ("test_x", test_x)):
        if features.shape[1] != train_x.shape[1]:
            raise ValueError(f"{name} must have train_x's dim {train_x.shape[1]}; received "
                             f"{features.shape[1]}. Extract all splits with the same encoder.")
    multilabel = metric == "map_11point"
    if multilabel:
        train_y = _as_multilabel(train_y, train_x.shape[0], "train_y")
        val_y = _as_multilabel(val_y, val_x.shape[0], "val_y")
        test_y = _as_multilabel(test_y, test_x.shape[0], "test_y")
        width = train_y.shape[1]
        if val_y.shape[1] != width or test_y.shape[1] != width:
            raise ValueError(f"val_y and test_y must have train_y's {width} columns; received "
                             f"{val_y.shape[1]} and {test_y.shape[1]}. Use one class list.")
        num_classes = width if num_classes is None else num_classes
        if num_classes != width:
            raise ValueError(f"num_classes={num_classes!r} differs from the targets' width "
                             f"{width}; pass num_classes=None or matching targets.")
    else:
        train_y = _as_class_ids(train_y, train_x.shape[0], "train_y")
        val_y = _as_class_ids(val_y, val_x.shape[0], "val_y")
        test_y = _as_class_ids(test_y, test_x.shape[0], "test_y")
        largest = int(max(train_y.max(), val_y.max(), test_y.max()))
        num_classes = largest + 1 if num_classes is None else num_classes
        if largest >= num_classes:
            raise ValueError(f"labels must be < num_classes={num_classes}; received id "
                             f"{largest}. Pass the dataset's number of classes.")
    lambdas = np.sort(np.asarray(lambdas, dtype=np.float64).reshape(-1))
    if lambdas.size == 0 or not np.all(lambdas > 0):
        raise ValueError(f"lambdas must be a non-empty list of positive floats; received "
                         f"{lambdas.tolist()!r}. Use e.g. np.logspace(-6, 5, 45).")
    _check_positive_int("max_iter", max_iter, "Pass e.g. 1000.")

    def prepare(fit_x, *others):
        if not standardize:
            return (fit_x,) + others
        mean, scale = _standardizer(fit_x)
        return tuple((x - mean) / scale for x in (fit_x,) + others)

    sweep_train, sweep_val = prepare(train_x, val_x)
    probe = _LogisticProbe(num_classes, multilabel, max_iter, tol, warm_start)
    val_scores = np.empty(lambdas.size)
    for index in range(lambdas.size - 1, -1, -1):  # largest lambda first
        probe.fit(sweep_train, train_y, lambdas[index])
        val_scores[index] = metrics.score(metric, val_y, probe.scores(sweep_val))
    best = int(np.flatnonzero(val_scores == val_scores.max())[-1])  # ties -> largest lambda

    trainval_x = np.concatenate([train_x, val_x])
    trainval_y = np.concatenate([train_y, val_y])
    refit_x, refit_test = prepare(trainval_x, test_x)
    final = _LogisticProbe(num_classes, multilabel, max_iter, tol, warm_start=False)
    final.fit(refit_x, trainval_y, lambdas[best])
    test_scores = final.scores(refit_test)
    return SweepResult(metric=metric, best_lambda=float(lambdas[best]), lambdas=lambdas,
                       val_scores=val_scores, test_score=metrics.score(metric, test_y, test_scores),
                       test_scores=test_scores)


def stratified_holdout(labels, fraction=0.2, seed=0):
    """Splits sample indices into train and validation, holding out `fraction` of each class.

    For benchmarks without an official validation set (reference/transfer.md: "a held-out subset
    of train"). Each class keeps at least one training sample; a class with one sample holds none
    out. Multi-label targets are not handled (VOC2007 has an official validation set).

    Args:
        labels: int [num_samples] class ids.
        fraction: Python float in (0, 1), the share of each class held out (rounded).
        seed: Python int, seeds `np.random.default_rng`.

    Returns:
        (train_indices, val_indices): two sorted int64 arrays partitioning `range(num_samples)`.

    Raises:
        ValueError: a bad fraction or labels.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be int [num_samples > 0]; received shape {labels.shape}. "
                         "Pass one class id per sample.")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1); received {fraction!r}. Pass e.g. 0.2.")
    rng = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = min(int(round(fraction * members.size)), members.size - 1)
        held_out.append(rng.permutation(members)[:count])
    val_indices = np.sort(np.concatenate(held_out)).astype(np.int64)
    train_indices = np.setdiff1d(np.arange(labels.size), val_indices).astype(np.int64)
    return train_indices, val_indices


# ----------------------------------------------------------------------------------------------
# kNN


def knn_scores(train_x, train_y, query_x, *, k=20, temperature=0.1, num_classes=None,
               chunk_size=512):
    """Class votes of the `k` most cosine-similar training samples of each query.

    Features are L2-normalised, so similarity s = <x_query, x_train> / (|.| |.|). With a
    temperature the vote of each neighbour is exp(s / temperature) (Wu et al. 2018, as in the
    InstDisc/MoCo kNN monitor); with `temperature=None` every neighbour votes 1 (majority vote).
    Queries are processed `chunk_size` at a time, so memory is O(chunk_size * num_train). Which
    neighbours win a tie in similarity at the k-th place is unspecified.

    Args:
        train_x: float [num_train, dim].
        train_y: int [num_train] class ids.
        query_x: float [num_query, dim].
        k: Python int in [1, num_train].
        temperature: Python float > 0, or None for plain voting.
        num_classes: optional Python int; default `max(train_y) + 1`.
        chunk_size: Python int > 0, queries per block.

    Returns:
        float64 [num_query, num_classes] summed votes.

    Raises:
        ValueError: bad shapes, `k`, `temperature` or `chunk_size`.
    """
    train_x = _as_features(train_x, "train_x")
    query_x = _as_features(query_x, "query_x")
    train_y = _as_class_ids(train_y, train_x.shape[0], "train_y")
    if query_x.shape[1] != train_x.shape[1]:
        raise ValueError(f"query_x must have train_x's dim {train_x.shape[1]}; received "
                         f"{query_x.shape[1]}. Extract both with the same encoder.")
    k = _check_positive_int("k", k, "Pass e.g. k=20.")
    if k > train_x.shape[0]:
        raise ValueError(f"k must be <= num_train={train_x.shape[0]}; received {k}. "
                         "Pass a smaller k.")
    if temperature is not None and not temperature > 0:
        raise ValueError(f"temperature must be > 0 or None; received {temperature!r}. "
                         "Pass e.g. 0.1, or None for majority voting.")
    chunk_size = _check_positive_int("chunk_size", chunk_size, "Pass e.g. 512.")
    num_classes = int(train_y.max()) + 1 if num_classes is None else num_classes
    if train_y.max() >= num_classes:
        raise ValueError(f"train_y must be < num_classes={num_classes}; received id "
                         f"{train_y.max()}. Pass the dataset's number of classes.")
    train_unit = l2_normalize(train_x)
    query_unit = l2_normalize(query_x)
    votes = np.zeros((query_x.shape[0], num_classes))
    for start in range(0, query_x.shape[0], chunk_size):
        similarity = query_unit[start:start + chunk_size] @ train_unit.T  # [chunk, num_train]
        neighbours = np.argpartition(-similarity, k - 1, axis=1)[:, :k]  # [chunk, k], unordered
        neighbour_similarity = np.take_along_axis(similarity, neighbours, axis=1)
        if temperature is None:
            weights = np.ones_like(neighbour_similarity)
        else:
            weights = np.exp(neighbour_similarity / temperature)
        rows = np.arange(neighbours.shape[0])[:, None]
        np.add.at(votes[start:start + chunk_size], (rows, train_y[neighbours]), weights)
    return votes


def knn_accuracy(train_x, train_y, test_x, test_y, *, k=20, temperature=0.1, chunk_size=512):
    """Top-1 accuracy of the cosine kNN classifier of `knn_scores`.

    The predicted class is the one with the largest vote; equal votes go to the smallest class id.

    Args:
        train_x: float [num_train, dim] frozen features (any scale: they are L2-normalised).
        train_y: int [num_train] class ids.
        test_x: float [num_test, dim].
        test_y: int [num_test] class ids.
        k: Python int, neighbours per query (default 20).
        temperature: Python float > 0 for exp(s / T) weights (default 0.1), None for majority.
        chunk_size: Python int, queries per block.

    Returns:
        Python float in [0, 1].

    Raises:
        ValueError: bad shapes or parameters.
    """
    test_x = _as_features(test_x, "test_x")
    test_y = _as_class_ids(test_y, test_x.shape[0], "test_y")
    votes = knn_scores(train_x, train_y, test_x, k=k, temperature=temperature,
                       chunk_size=chunk_size)
    return float(np.mean(np.argmax(votes, axis=1) == test_y))


# ----------------------------------------------------------------------------------------------
# few-shot


@dataclasses.dataclass(frozen=True)
class FewShotResult:
    """Outcome of `few_shot_probe`.

    Attributes:
        mean: Python float, mean test accuracy over draws.
        std: Python float, standard deviation over draws (ddof=0).
        accuracies: float64 [draws], accuracy of each draw.
        shots: Python int, labelled examples per class in each draw.
    """
    mean: float
    std: float
    accuracies: np.ndarray
    shots: int

    def to_dict(self):
        """JSON-friendly summary."""
        return {"mean": self.mean, "std": self.std, "accuracies": self.accuracies.tolist(),
                "shots": self.shots}


def few_shot_indices(labels, shots, draws=1, seed=0):
    """Seeded draws of exactly `shots` training indices per class, without replacement.

    Args:
        labels: int [num_samples] class ids; every class present must have >= `shots` samples.
        shots: Python int > 0.
        draws: Python int > 0.
        seed: Python int; the same seed gives the same draws.

    Returns:
        int64 [draws, num_present_classes * shots]; row d lists draw d's indices, grouped by
        class in increasing class order.

    Raises:
        ValueError: bad shots/draws, or a class with fewer than `shots` samples.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be int [num_samples > 0]; received shape {labels.shape}. "
                         "Pass one class id per sample.")
    shots = _check_positive_int("shots", shots, "Pass e.g. shots=5.")
    draws = _check_positive_int("draws", draws, "Pass e.g. draws=20.")
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < shots:
        small = classes[np.argmin(counts)]
        raise ValueError(f"class {int(small)} has {counts.min()} samples, fewer than "
                         f"shots={shots}; pass a smaller shots or more training data.")
    members = [np.flatnonzero(labels == label) for label in classes]
    rng = np.random.default_rng(seed)
    return np.stack([
        np.concatenate([rng.choice(group, size=shots, replace=False) for group in members])
        for _ in range(draws)]).astype(np.int64)


def few_shot_probe(train_x, train_y, test_x, test_y, shots=5, draws=20, seed=0, *,
                   l2_lambda=1e-3, normalize=True, max_iter=DEFAULT_MAX_ITER):
    """Few-shot linear probe: logistic regression on `shots` labelled examples per class.

    Each draw (`few_shot_indices`) fits an L2-regularised multinomial logistic regression
    (L-BFGS; objective `mean CE + l2_lambda/2 ||W||^2`, see the module docstring) on its
    `num_classes * shots` examples and scores top-1 accuracy on the whole test set. With so few
    samples no statistics are estimated: features are L2-normalised (`normalize=True`) instead of
    standardised. A fixed lambda is used (there is no validation set to tune it on).

    Args:
        train_x: float [num_train, dim], the pool the labelled examples are drawn from.
        train_y: int [num_train] class ids.
        test_x: float [num_test, dim].
        test_y: int [num_test] class ids.
        shots: Python int > 0, labelled examples per class.
        draws: Python int > 0, independent draws to average over.
        seed: Python int, seeds the draws.
        l2_lambda: Python float > 0.
        normalize: Python bool, L2-normalise features first.
        max_iter: Python int, L-BFGS iterations per fit.

    Returns:
        A `FewShotResult`.

    Raises:
        ValueError: bad shapes or parameters, or a class with fewer than `shots` samples.
    """
    train_x = _as_features(train_x, "train_x")
    test_x = _as_features(test_x, "test_x")
    train_y = _as_class_ids(train_y, train_x.shape[0], "train_y")
    test_y = _as_class_ids(test_y, test_x.shape[0], "test_y")
    if test_x.shape[1] != train_x.shape[1]:
        raise ValueError(f"test_x must have train_x's dim {train_x.shape[1]}; received "
                         f"{test_x.shape[1]}. Extract both with the same encoder.")
    indices = few_shot_indices(train_y, shots, draws, seed)
    if normalize:
        train_x, test_x = l2_normalize(train_x), l2_normalize(test_x)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    accuracies = np.empty(draws)
    for draw, chosen in enumerate(indices):
        probe = _LogisticProbe(num_classes, False, max_iter, 1e-4, warm_start=False)
        probe.fit(train_x[chosen], train_y[chosen], l2_lambda)
        accuracies[draw] = metrics.top_k_accuracy(test_y, probe.scores(test_x), k=1)
    return FewShotResult(mean=float(accuracies.mean()), std=float(accuracies.std()),
                         accuracies=accuracies, shots=shots)


# ----------------------------------------------------------------------------------------------
# SGD linear probe (Keras)


@dataclasses.dataclass(frozen=True)
class LinearProbeResult:
    """Outcome of `sgd_linear_probe`.

    Attributes:
        top1: Python float, test top-1 accuracy.
        top5: Python float, test top-5 accuracy (top-`num_classes` when fewer than 5 classes).
        model: the trained `keras.Sequential` ([dim] -> [num_classes] logits).
    """
    top1: float
    top5: float
    model: object = dataclasses.field(repr=False)


def sgd_linear_probe(train_x, train_y, test_x, test_y, *, num_classes=None, epochs=30,
                     batch_size=256, learning_rate=0.1, optimizer="momentum", schedule="cosine",
                     weight_decay=0.0, momentum=0.9, seed=0, verbose=0, schedule_options=None,
                     optimizer_options=None):
    """Trains a linear (Dense) classifier on frozen features with a stage-2 optimizer.

    The paper's stage 2 (reference/paper.md) trains a linear layer on stop-gradient encoder
    outputs, e.g. ImageNet: `optimizer="rmsprop", schedule="exponential", learning_rate=0.05 *
    batch/256, weight_decay=1e-6`; CIFAR-10: `optimizer="momentum", schedule="piecewise",
    learning_rate=2.5 * batch/256, weight_decay=0`. Optimizers come from
    `optimizers.build_optimizer(optimizer, ..., stage=2)` (coupled L2 weight decay on the kernel,
    RMSProp epsilon 1e-3) and schedules from `schedules.build_schedule`, with
    `steps_per_epoch = ceil(num_train / batch_size)` (the last batch of an epoch may be partial).
    Here the features are precomputed, so there is no augmentation (the paper's stage 2 augments
    images: `supcon_tf.evaluation.classifier` streams augmented images through the encoder).

    Args:
        train_x: float [num_train, dim] frozen features.
        train_y: int [num_train] class ids.
        test_x: float [num_test, dim].
        test_y: int [num_test] class ids.
        num_classes: optional Python int; default largest id + 1.
        epochs: Python int > 0.
        batch_size: Python int > 0.
        learning_rate: Python float, peak rate already scaled to `batch_size`.
        optimizer: a name of `optimizers.OPTIMIZERS` ("momentum", "nesterov", "rmsprop", ...).
        schedule: a name of `schedules.SCHEDULES`.
        weight_decay: Python float >= 0, coupled L2 on the kernel (bias excluded).
        momentum: Python float in [0, 1).
        seed: Python int, seeds Keras (initialisation and shuffling).
        verbose: Keras `fit` verbosity.
        schedule_options: optional dict of further `schedules.build_schedule` keywords
            (`warmup_epochs`, `decay_rate`, `decay_epochs`, `boundary_epochs`, `alpha`), e.g.
            `{"boundary_epochs": [60, 75, 90]}`.
        optimizer_options: optional dict of further `optimizers.build_optimizer` keywords,
            e.g. `{"epsilon": 1e-3}`.

    Returns:
        A `LinearProbeResult`.

    Raises:
        ValueError: bad shapes or hyperparameters.
    """
    import keras  # deferred: the sklearn probes do not need a Keras backend

    from supcon_tf import optimizers as optimizers_lib
    from supcon_tf import schedules as schedules_lib

    train_x = _as_features(train_x, "train_x").astype(np.float32)
    test_x = _as_features(test_x, "test_x").astype(np.float32)
    train_y = _as_class_ids(train_y, train_x.shape[0], "train_y")
    test_y = _as_class_ids(test_y, test_x.shape[0], "test_y")
    if test_x.shape[1] != train_x.shape[1]:
        raise ValueError(f"test_x must have train_x's dim {train_x.shape[1]}; received "
                         f"{test_x.shape[1]}. Extract both with the same encoder.")
    epochs = _check_positive_int("epochs", epochs, "Pass e.g. epochs=30.")
    batch_size = _check_positive_int("batch_size", batch_size, "Pass e.g. batch_size=256.")
    num_classes = int(max(train_y.max(), test_y.max())) + 1 if num_classes is None else num_classes
    steps_per_epoch = -(-train_x.shape[0] // batch_size)
    rate = schedules_lib.build_schedule(schedule, learning_rate, steps_per_epoch=steps_per_epoch,
                                        epochs=epochs, **(schedule_options or {}))
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((train_x.shape[1],)),
                              keras.layers.Dense(num_classes, name="linear_probe")])
    model.compile(optimizer=optimizers_lib.build_optimizer(
                      optimizer, rate, weight_decay, momentum=momentum, stage=2,
                      **(optimizer_options or {})),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train_x, train_y, epochs=epochs, batch_size=batch_size, shuffle=True,
              verbose=verbose)
    logits = np.asarray(model.predict(test_x, batch_size=max(batch_size, 1024), verbose=0))
    return LinearProbeResult(top1=metrics.top_k_accuracy(test_y, logits, 1),
                             top5=metrics.top_k_accuracy(test_y, logits, min(5, num_classes)),
                             model=model)
