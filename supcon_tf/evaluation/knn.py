"""kNN on frozen features: cosine k-nearest-neighbour classification.

`knn_scores` sums the votes of each query's `k` most cosine-similar training samples, weighted
by exp(s / temperature) (Wu et al. 2018, the InstDisc/MoCo kNN monitor) or 1 each (majority
vote); `knn_accuracy` is the top-1 of those votes. Queries are processed in chunks, so memory is
O(chunk_size * num_train). The kNN monitor of pretraining (`supcon_tf.monitors.KNNAccuracy`)
calls `knn_accuracy` on `features.embed_images` of a held-out set.
"""

import numpy as np

from supcon_tf.evaluation import features


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
    train_x = features.check_features(train_x, "train_x")
    query_x = features.check_features(query_x, "query_x")
    train_y = features.check_class_ids(train_y, train_x.shape[0], "train_y")
    features.check_same_dim(train_x, query_x, "train_x", "query_x")
    k = features.check_positive_int("k", k, "Pass e.g. k=20.")
    if k > train_x.shape[0]:
        raise ValueError(f"k must be <= num_train={train_x.shape[0]}; received {k}. "
                         "Pass a smaller k.")
    if temperature is not None and not temperature > 0:
        raise ValueError(f"temperature must be > 0 or None; received {temperature!r}. "
                         "Pass e.g. 0.1, or None for majority voting.")
    chunk_size = features.check_positive_int("chunk_size", chunk_size, "Pass e.g. 512.")
    num_classes = int(train_y.max()) + 1 if num_classes is None else num_classes
    if train_y.max() >= num_classes:
        raise ValueError(f"train_y must be < num_classes={num_classes}; received id "
                         f"{train_y.max()}. Pass the dataset's number of classes.")
    train_unit = features.l2_normalize(train_x)
    query_unit = features.l2_normalize(query_x)
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
    test_x = features.check_features(test_x, "test_x")
    test_y = features.check_class_ids(test_y, test_x.shape[0], "test_y")
    votes = knn_scores(train_x, train_y, test_x, k=k, temperature=temperature,
                       chunk_size=chunk_size)
    return float(np.mean(np.argmax(votes, axis=1) == test_y))

