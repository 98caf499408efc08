"""Few-shot linear probe: logistic regression on `shots` labelled examples per class.

`few_shot_indices` draws exactly `shots` training indices per class (seeded, without
replacement); `few_shot_probe` fits the L-BFGS logistic regression of `linear_probe` on each
draw (fixed lambda, L2-normalised features) and reports the mean and std of the test top-1.
"""

import dataclasses

import numpy as np

from supcon_tf.evaluation import features
from supcon_tf.evaluation import linear_probe
from supcon_tf.evaluation import metrics


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
    shots = features.check_positive_int("shots", shots, "Pass e.g. shots=5.")
    draws = features.check_positive_int("draws", draws, "Pass e.g. draws=20.")
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
                   l2_lambda=1e-3, normalize=True, max_iter=linear_probe.DEFAULT_MAX_ITER):
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
    train_x = features.check_features(train_x, "train_x")
    test_x = features.check_features(test_x, "test_x")
    train_y = features.check_class_ids(train_y, train_x.shape[0], "train_y")
    test_y = features.check_class_ids(test_y, test_x.shape[0], "test_y")
    features.check_same_dim(train_x, test_x, "train_x", "test_x")
    indices = few_shot_indices(train_y, shots, draws, seed)
    if normalize:
        train_x, test_x = features.l2_normalize(train_x), features.l2_normalize(test_x)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    accuracies = np.empty(draws)
    for draw, chosen in enumerate(indices):
        probe = linear_probe.LogisticProbe(num_classes, False, max_iter, 1e-4,
                                           warm_start=False)
        probe.fit(train_x[chosen], train_y[chosen], l2_lambda)
        accuracies[draw] = metrics.top_k_accuracy(test_y, probe.scores(test_x), k=1)
    return FewShotResult(mean=float(accuracies.mean()), std=float(accuracies.std()),
                         accuracies=accuracies, shots=shots)
