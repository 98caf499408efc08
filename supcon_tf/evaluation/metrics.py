"""Evaluation metrics of the transfer protocol: top-k, mean per-class accuracy, 11-point mAP.

Three metrics cover the 12 benchmarks of reference/transfer.md (`transfer.METRICS`):

* `"top1"`: `top_k_accuracy(labels, scores, k=1)`, the fraction of samples whose true class is
  ranked first.
* `"mean_per_class"`: `mean_per_class_accuracy(labels, predictions)`, the unweighted mean over
  classes of each class's recall (Aircraft, Pets, Caltech-101, Flowers-102).
* `"map_11point"`: `map_11point(targets, scores)`, PASCAL VOC2007's 11-point interpolated average
  precision averaged over classes (multi-label VOC2007).

`score(metric, targets, scores)` dispatches on those names, so the probes can select
hyperparameters with whichever metric a benchmark uses.

Ties in top-k: a sample counts as correct at k when fewer than k classes score *strictly* higher
than its true class (ties resolved in the sample's favour, as `tf.math.in_top_k` does). The numpy
and `keras.ops` versions share this definition.

Difficult labels in mAP: the targets matrix holds `1` (class present), `0` (absent) and
`IGNORE = -1` (ignored for that class: VOC's "difficult" objects). An image whose only instances
of a class are difficult is neither a positive nor a negative for that class: it is left out of
that class's ranking entirely, as in the VOC2007 development kit (ground truth 0 in its
`<class>_test.txt` files). `voc_targets` builds this matrix from TFDS `voc/2007` features.
"""

import numpy as np
from keras import ops

IGNORE = -1
METRICS = ("top1", "mean_per_class", "map_11point")
# 0, 0.1, ..., 1.0 (VOC2007). Computed as i / 10 so each threshold is the double nearest to it,
# as a recall tp / npos of the same value is: recall 7/10 meets t = 0.7 (linspace gives
# 0.7000000000000001 and would miss it).
RECALL_THRESHOLDS = np.arange(11) / 10.0


# ----------------------------------------------------------------------------------------------
# input checks


def _as_labels(labels, name="labels"):
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D int [num_samples]; received shape {labels.shape}. "
                         "Pass one integer class id per sample (argmax one-hot labels first).")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError(f"{name} must hold integer class ids; received dtype {labels.dtype} "
                             "with fractional values. Pass integer labels.")
        labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name} must be >= 0; received minimum {labels.min()}. "
                         "Pass class ids in [0, num_classes).")
    return labels


def _as_scores(scores, num_samples):
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != num_samples:
        raise ValueError(f"scores must be float [num_samples={num_samples}, num_classes]; "
                         f"received shape {scores.shape}. Pass one row of class scores per label.")
    return scores


def _check_k(k, num_classes):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= num_classes:
        raise ValueError(f"k must be an int in [1, num_classes={num_classes}]; received {k!r}. "
                         "Pass a smaller k or scores with more classes.")


# ----------------------------------------------------------------------------------------------
# top-k


def top_k_correct(labels, scores, k=1):
    """Whether each sample's true class is among its `k` highest scores (numpy).

    A sample is correct when fewer than `k` classes score strictly higher than its true class.

    Args:
        labels: int [num_samples], class ids in [0, num_classes).
        scores: float [num_samples, num_classes], logits or probabilities (any monotone score).
        k: Python int in [1, num_classes].

    Returns:
        bool [num_samples].

    Raises:
        ValueError: bad shapes, a label out of range or a bad `k`.
    """
    labels = _as_labels(labels)
    scores = _as_scores(scores, labels.shape[0])
    _check_k(k, scores.shape[1])
    if labels.size and labels.max() >= scores.shape[1]:
        raise ValueError(f"labels must be < num_classes={scores.shape[1]}; received maximum "
                         f"{labels.max()}. Pass scores with one column per class.")
    true_scores = np.take_along_axis(scores, labels[:, None], axis=1)  # [N, 1]
    higher = np.sum(scores > true_scores, axis=1)  # [N]
    return higher < k


def top_k_accuracy(labels, scores, k=1):
    """Top-k accuracy: the fraction of samples whose true class is among the `k` best scores.

    Args:
        labels: int [num_samples], class ids.
        scores: float [num_samples, num_classes].
        k: Python int in [1, num_classes]; 1 gives the transfer table's "top1".

    Returns:
        Python float in [0, 1].

    Raises:
        ValueError: bad shapes, a label out of range, a bad `k` or no samples.
    """
    correct = top_k_correct(labels, scores, k)
    if correct.size == 0:
        raise ValueError("top_k_accuracy got 0 samples; pass at least one labelled sample.")
    return float(np.mean(correct))


def top_k_correct_ops(labels, scores, k=1):
    """Per-sample top-k correctness with `keras.ops` (any backend, usable inside a step).

    Same tie rule as `top_k_correct`: correct when fewer than `k` classes score strictly higher
    than the true class. Shapes are checked by the backend, not here.

    Args:
        labels: int tensor [batch], class ids.
        scores: float tensor [batch, num_classes].
        k: Python int >= 1.

    Returns:
        float32 tensor [batch] of 0/1; its mean is the batch top-k accuracy.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int; received {k!r}. Pass e.g. k=1 or k=5.")
    scores = ops.cast(scores, "float32")
    labels = ops.cast(ops.reshape(labels, (-1, 1)), "int32")
    true_scores = ops.take_along_axis(scores, labels, axis=1)  # [batch, 1]
    higher = ops.sum(ops.cast(ops.greater(scores, true_scores), "int32"), axis=1)  # [batch]
    return ops.cast(ops.less(higher, k), "float32")


# ----------------------------------------------------------------------------------------------
# mean per-class accuracy


def per_class_accuracy(labels, predictions, num_classes=None):
    """Recall of each class: correct predictions of class c / samples of class c.

    Args:
        labels: int [num_samples], true class ids.
        predictions: int [num_samples], predicted class ids (e.g. `argmax(scores, 1)`).
        num_classes: optional Python int; defaults to `max(labels, predictions) + 1`.

    Returns:
        float64 [num_classes]; NaN for a class with no sample in `labels`.

    Raises:
        ValueError: bad shapes, mismatched lengths or ids >= `num_classes`.
    """
    labels = _as_labels(labels)
    predictions = _as_labels(predictions, "predictions")
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions must have the labels' shape {labels.shape}; received "
                         f"{predictions.shape}. Pass one predicted class per label.")
    if labels.size == 0:
        raise ValueError("per_class_accuracy got 0 samples; pass at least one labelled sample.")
    largest = int(max(labels.max(), predictions.max()))
    if num_classes is None:
        num_classes = largest + 1
    elif largest >= num_classes:
        raise ValueError(f"class ids must be < num_classes={num_classes}; received id {largest}. "
                         "Pass the dataset's number of classes.")
    support = np.bincount(labels, minlength=num_classes).astype(np.float64)
    hits = np.bincount(labels[labels == predictions], minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, hits / np.maximum(support, 1), np.nan)


def mean_per_class_accuracy(labels, predictions, num_classes=None):
    """Mean per-class accuracy: the unweighted mean of each class's recall.

    Classes with no sample in `labels` are left out of the mean (their recall is undefined);
    every test split in the registry holds every class.

    Args:
        labels: int [num_samples], true class ids.
        predictions: int [num_samples] predicted ids, or float [num_samples, num_classes] scores
            (their argmax is used).
        num_classes: optional Python int.

    Returns:
        Python float in [0, 1].

    Raises:
        ValueError: bad shapes or ids out of range.
    """
    predictions = np.asarray(predictions)
    if predictions.ndim == 2:
        predictions = np.argmax(_as_scores(predictions, predictions.shape[0]), axis=1)
    recalls = per_class_accuracy(labels, predictions, num_classes)
    return float(np.nanmean(recalls))


# ----------------------------------------------------------------------------------------------
# 11-point interpolated mAP (PASCAL VOC2007)


def _check_targets(targets, scores):
    targets = np.asarray(targets)
    scores = np.asarray(scores, dtype=np.float64)
    if targets.ndim != 2:
        raise ValueError(f"targets must be int [num_samples, num_classes]; received shape "
                         f"{targets.shape}. Pass a multi-label matrix of 1 / 0 / {IGNORE}.")
    if scores.shape != targets.shape:
        raise ValueError(f"scores must have the targets' shape {targets.shape}; received "
                         f"{scores.shape}. Pass one score per sample and class.")
    bad = ~np.isin(targets, (1, 0, IGNORE))
    if np.any(bad):
        raise ValueError(f"targets must hold only 1, 0 or {IGNORE} (ignored/difficult); received "
                         f"{targets[bad][0]!r}. Mark difficult-only labels with {IGNORE}.")
    return targets.astype(np.int64), scores


def average_precision_11point(targets, scores):
    """VOC2007 11-point interpolated average precision of one class.

    Samples are ranked by decreasing score (ties keep input order); `IGNORE` entries are removed
    first. With precision p(r) and recall r along the ranking,

        AP = 1/11 * sum_{t in {0, 0.1, ..., 1}} max_{r >= t} p(r)     (0 when no r >= t).

    Args:
        targets: int [num_samples] of 1 (positive), 0 (negative), `IGNORE` (left out).
        scores: float [num_samples], higher = more confident the class is present.

    Returns:
        Python float in [0, 1], or NaN when there is no positive.

    Raises:
        ValueError: shapes differ or targets hold other values.
    """
    targets = np.asarray(targets)
    scores = np.asarray(scores)
    if targets.ndim != 1 or scores.shape != targets.shape:
        raise ValueError(f"targets and scores must both be 1-D [num_samples] for one class; "
                         f"received shapes {targets.shape} and {scores.shape}. Use map_11point "
                         "for [num_samples, num_classes] matrices.")
    targets, scores = _check_targets(targets[:, None], scores[:, None])
    return _ap_11point(targets[:, 0], scores[:, 0])


def _ap_11point(targets, scores):
    keep = targets != IGNORE
    targets, scores = targets[keep], scores[keep]
    num_positives = int(np.sum(targets == 1))
    if num_positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    true_positives = np.cumsum(targets[order] == 1)  # [M] after each rank
    ranks = np.arange(1, targets.shape[0] + 1)
    precision = true_positives / ranks
    recall = true_positives / num_positives
    points = [np.max(precision[recall >= t], initial=0.0) for t in RECALL_THRESHOLDS]
    return float(np.mean(points))


def per_class_ap_11point(targets, scores):
    """11-point AP of every class of a multi-label problem.

    Args:
        targets: int [num_samples, num_classes] of 1 / 0 / `IGNORE`.
        scores: float [num_samples, num_classes].

    Returns:
        float64 [num_classes]; NaN for a class with no positive.

    Raises:
        ValueError: bad shapes or target values.
    """
    targets, scores = _check_targets(targets, scores)
    return np.array([_ap_11point(targets[:, c], scores[:, c]) for c in range(targets.shape[1])])


def map_11point(targets, scores):
    """VOC2007 mean average precision: the 11-point AP averaged over classes.

    Classes with no positive in `targets` are left out of the mean (VOC2007 test has all 20).

    Args:
        targets: int [num_samples, num_classes] of 1 (present), 0 (absent) and `IGNORE` (-1,
            difficult-only: excluded from that class's ranking).
        scores: float [num_samples, num_classes], per-class confidences (e.g. one-vs-rest
            logits); only their order within a class matters.

    Returns:
        Python float in [0, 1].

    Raises:
        ValueError: bad shapes or target values, or no class has a positive.
    """
    aps = per_class_ap_11point(targets, scores)
    if np.all(np.isnan(aps)):
        raise ValueError("map_11point: no class has a positive target (value 1); pass targets "
                         "with at least one present label.")
    return float(np.nanmean(aps))


def voc_targets(labels, labels_no_difficult, num_classes):
    """Builds the 1 / 0 / `IGNORE` matrix from per-image label lists (TFDS `voc/2007` features).

    A class is 1 when it has a non-difficult object in the image, `IGNORE` when all its objects
    are difficult, and 0 when absent.

    Args:
        labels: sequence of num_samples int sequences, every class present in each image
            (TFDS `labels`).
        labels_no_difficult: sequence of num_samples int sequences, the classes with at least one
            non-difficult object (TFDS `labels_no_difficult`).
        num_classes: Python int (20 for VOC).

    Returns:
        int64 [num_samples, num_classes].

    Raises:
        ValueError: lengths differ, or a class id is out of range.
    """
    if len(labels) != len(labels_no_difficult):
        raise ValueError(f"labels and labels_no_difficult must have the same length; received "
                         f"{len(labels)} and {len(labels_no_difficult)}. Pass both per image.")
    targets = np.zeros((len(labels), num_classes), np.int64)
    for row, (present, clear) in enumerate(zip(labels, labels_no_difficult)):
        for ids, value in ((present, IGNORE), (clear, 1)):
            ids = np.asarray(ids, np.int64).reshape(-1)
            if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
                raise ValueError(f"class ids must be in [0, {num_classes}); received "
                                 f"{ids.tolist()} in image {row}. Pass the dataset's number of "
                                 "classes.")
            targets[row, ids] = value
    return targets


# ----------------------------------------------------------------------------------------------
# dispatch by name


def check_metric(metric):
    """Returns `metric` if it is one of `METRICS`, else raises a one-line ValueError."""
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; use one of {', '.join(METRICS)}.")
    return metric


def score(metric, targets, scores):
    """Evaluates a named transfer metric from class scores.

    Args:
        metric: one of `METRICS`.
        targets: int [num_samples] class ids ("top1", "mean_per_class") or int
            [num_samples, num_classes] of 1 / 0 / `IGNORE` ("map_11point").
        scores: float [num_samples, num_classes].

    Returns:
        Python float in [0, 1].

    Raises:
        ValueError: unknown metric or bad inputs for it.
    """
    check_metric(metric)
    if metric == "top1":
        return top_k_accuracy(targets, scores, k=1)
    if metric == "mean_per_class":
        scores = _as_scores(scores, np.asarray(targets).shape[0])
        return mean_per_class_accuracy(targets, np.argmax(scores, axis=1), scores.shape[1])
    if metric == "map_11point":
        return map_11point(targets, scores)
    raise AssertionError(metric)  # unreachable: check_metric lists every branch
