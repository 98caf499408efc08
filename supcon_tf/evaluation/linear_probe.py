"""L-BFGS linear probe: logistic regression on frozen features (Kornblith et al. 2019).

The linear-evaluation protocol used by SimCLR and SupCon for transfer (reference/transfer.md):

* `lbfgs_logistic_sweep`: L2-regularised multinomial logistic regression fitted with L-BFGS for
  each of 45 log-spaced lambdas in [1e-6, 1e5], lambda chosen on a validation split by the
  benchmark's metric, refit on train+validation, scored on test. Multi-label targets (VOC2007)
  fit one binary model per class.
* `stratified_holdout`: a seeded per-class validation split cut from train, for the benchmarks
  without an official validation set.
* `LogisticProbe`: the fitted L-BFGS model itself, also used by `few_shot.few_shot_probe`.

Every function takes numpy feature matrices (`features.extract_features(...)`, float
`[num_samples, dim]`) and labels, and never touches the encoder. The SGD-trained linear
classifier of the paper's stage 2 is `linear_classifier`.

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

from supcon_tf.evaluation import features
from supcon_tf.evaluation import metrics

DEFAULT_LAMBDAS = np.logspace(-6, 5, 45)  # Kornblith et al. 2019: 45 values in [1e-6, 1e5]
DEFAULT_MAX_ITER = 1000
# Fits on at most this many feature values (n * dim) run BLAS/OpenMP on one thread: for small
# problems thread start-up and spinning cost more than they save, badly so on a loaded machine.
SINGLE_THREAD_MAX_VALUES = 1 << 20


# ----------------------------------------------------------------------------------------------
# helpers


def _standardizer(values):
    """Mean and scale of each feature; a constant feature gets scale 1 (it stays 0)."""
    mean = values.mean(axis=0)
    scale = values.std(axis=0)
    return mean, np.where(scale > 0, scale, 1.0)


def _thread_limit(values):
    if values.size <= SINGLE_THREAD_MAX_VALUES:
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


class LogisticProbe:
    """L-BFGS logistic regression; warm-startable across a lambda path.

    Multiclass labels int [n] -> one multinomial model. Multi-label targets [n, num_classes] of
    1 / 0 / IGNORE -> one binary model per class on its non-ignored rows (a class whose rows are
    all one value gets a constant score). Inputs are used as given (no standardisation).

    Args:
        num_classes: Python int, the width of `scores`.
        multilabel: Python bool, one binary model per class.
        max_iter: Python int, L-BFGS iterations per fit.
        tol: Python float, L-BFGS tolerance.
        warm_start: Python bool, start each `fit` from the previous solution.
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

    def fit(self, inputs, labels, l2_lambda):
        """Fits `inputs` float [n, dim] to `labels` with penalty `l2_lambda`; returns self."""
        columns = range(self.num_classes) if self.multilabel else [None]
        if self._models is None or not self.warm_start:
            self._models = [self._new_model() for _ in columns]
        self._constants = [None] * len(self._models)
        with warnings.catch_warnings(), _thread_limit(inputs):
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
                model.fit(inputs[rows], target)
        return self

    def scores(self, inputs):
        """float [num_samples, num_classes] of `inputs` float [num_samples, dim]:
        log-probabilities (multiclass, -inf for classes never seen in training) or per-class
        decision values (multi-label)."""
        if self.multilabel:
            columns = []
            for model, constant in zip(self._models, self._constants):
                if constant is not None:
                    columns.append(np.full(inputs.shape[0], constant))
                else:
                    columns.append(model.decision_function(inputs))
            return np.stack(columns, axis=1)
        model = self._models[0]
        out = np.full((inputs.shape[0], self.num_classes), -np.inf)
        out[:, model.classes_] = model.predict_log_proba(inputs)
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
    train_x = features.check_features(train_x, "train_x")
    val_x = features.check_features(val_x, "val_x")
    test_x = features.check_features(test_x, "test_x")
    features.check_same_dim(train_x, val_x, "train_x", "val_x")
    features.check_same_dim(train_x, test_x, "train_x", "test_x")
    multilabel = metric == "map_11point"
    if multilabel:
        train_y = features.check_multilabel(train_y, train_x.shape[0], "train_y")
        val_y = features.check_multilabel(val_y, val_x.shape[0], "val_y")
        test_y = features.check_multilabel(test_y, test_x.shape[0], "test_y")
        width = train_y.shape[1]
        if val_y.shape[1] != width or test_y.shape[1] != width:
            raise ValueError(f"val_y and test_y must have train_y's {width} columns; received "
                             f"{val_y.shape[1]} and {test_y.shape[1]}. Use one class list.")
        num_classes = width if num_classes is None else num_classes
        if num_classes != width:
            raise ValueError(f"num_classes={num_classes!r} differs from the targets' width "
                             f"{width}; pass num_classes=None or matching targets.")
    else:
        train_y = features.check_class_ids(train_y, train_x.shape[0], "train_y")
        val_y = features.check_class_ids(val_y, val_x.shape[0], "val_y")
        test_y = features.check_class_ids(test_y, test_x.shape[0], "test_y")
        largest = int(max(train_y.max(), val_y.max(), test_y.max()))
        num_classes = largest + 1 if num_classes is None else num_classes
        if largest >= num_classes:
            raise ValueError(f"labels must be < num_classes={num_classes}; received id "
                             f"{largest}. Pass the dataset's number of classes.")
    lambdas = np.sort(np.asarray(lambdas, dtype=np.float64).reshape(-1))
    if lambdas.size == 0 or not np.all(lambdas > 0):
        raise ValueError(f"lambdas must be a non-empty list of positive floats; received "
                         f"{lambdas.tolist()!r}. Use e.g. np.logspace(-6, 5, 45).")
    features.check_positive_int("max_iter", max_iter, "Pass e.g. 1000.")

    def prepare(fit_x, *others):
        if not standardize:
            return (fit_x,) + others
        mean, scale = _standardizer(fit_x)
        return tuple((x - mean) / scale for x in (fit_x,) + others)

    sweep_train, sweep_val = prepare(train_x, val_x)
    probe = LogisticProbe(num_classes, multilabel, max_iter, tol, warm_start)
    val_scores = np.empty(lambdas.size)
    for index in range(lambdas.size - 1, -1, -1):  # largest lambda first
        probe.fit(sweep_train, train_y, lambdas[index])
        val_scores[index] = metrics.score(metric, val_y, probe.scores(sweep_val))
    best = int(np.flatnonzero(val_scores == val_scores.max())[-1])  # ties -> largest lambda

    trainval_x = np.concatenate([train_x, val_x])
    trainval_y = np.concatenate([train_y, val_y])
    refit_x, refit_test = prepare(trainval_x, test_x)
    final = LogisticProbe(num_classes, multilabel, max_iter, tol, warm_start=False)
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
