"""Retrieval evaluation: the metric-learning protocol on frozen embeddings.

Each query ranks the references by cosine similarity (embeddings L2-normalised); a reference is
relevant when it has the query's label. With references given, queries and references are
separate sets; without them, every embedding is a query and the others are its references
(leave-one-out: a query never retrieves itself). For a query q with `R_q` relevant references
and `rel_q(i)` = 1 when the reference at rank i (1-based) is relevant:

* `precision_at_1`: mean of rel_q(1).
* `recall_at_{k}`: the fraction of queries with a relevant reference among their k nearest
  (the "Recall@K" of the metric-learning literature, e.g. Oh Song et al. 2016).
* `r_precision`: mean of (1/R_q) Σ_{i=1..R_q} rel_q(i).
* `map_at_r`: MAP@R (Musgrave et al. 2020, "A Metric Learning Reality Check", Eq. 3): mean of
  (1/R_q) Σ_{i=1..R_q} P_q(i) rel_q(i), with P_q(i) the precision of the first i results.

Ranks are exact and deterministic: references in decreasing similarity, equal similarities
in increasing reference index (so duplicated embeddings rank in their input order). A query
whose label no reference carries (R_q = 0; in leave-one-out, a label seen once) has nothing to
retrieve: it is left out of every metric (as in pytorch-metric-learning's "lone queries") and
counted in `RetrievalResult.num_without_reference`.

Memory: queries are ranked `chunk_size` at a time against all references, so the largest
arrays are `[chunk_size, num_references]` (similarities float64 and a few same-sized masks);
only the first K = max(max R_q in the chunk, max(ks)) ranks of each query are sorted. K never
exceeds the number of references, so a class as large as the gallery costs a full sort of the
chunk's rows and nothing more.
"""

import dataclasses

import numpy as np

from supcon_tf.evaluation import features

DEFAULT_KS = (1, 2, 4, 8)
# Similarities per chunk when `chunk_size` is None: 4M float64 (32 MB), about 100 MB with the
# masks and ranks of the same shape.
_CHUNK_ELEMENTS = 1 << 22


@dataclasses.dataclass
class RetrievalResult:
    """What `retrieve` measured.

    Attributes:
        metrics: dict of Python floats: "precision_at_1", "r_precision", "map_at_r" and
            "recall_at_{k}" for each k (the `retrieval_metrics` dict).
        neighbours: int64 [num_queries, max(ks)], each query's nearest references (indices into
            the references; in leave-one-out into `embeddings`), best first.
        num_queries: Python int, the queries scored (those with at least one relevant reference).
        num_without_reference: Python int, the queries left out because no reference carries
            their label.
    """
    metrics: dict
    neighbours: np.ndarray
    num_queries: int
    num_without_reference: int


def retrieval_metrics(embeddings, labels, reference_embeddings=None, reference_labels=None,
                      ks=DEFAULT_KS, *, chunk_size=None):
    """Precision@1, R-precision, MAP@R and Recall@k of cosine retrieval (see the module doc).

    Args:
        embeddings: float [num_queries, dim], the queries (any scale: rows are L2-normalised; an
            all-zero row has similarity 0 to everything).
        labels: int [num_queries] class ids >= 0.
        reference_embeddings: float [num_references, dim], the gallery; None for leave-one-out
            within `embeddings`.
        reference_labels: int [num_references] class ids; given exactly when
            `reference_embeddings` is.
        ks: sequence of distinct Python ints in [1, number of references of a query] (in
            leave-one-out num_queries - 1), the k of each `recall_at_{k}`.
        chunk_size: Python int > 0, queries ranked at a time; None picks it so a chunk holds
            about 4M similarities.

    Returns:
        dict of Python floats in [0, 1]: "precision_at_1", "r_precision", "map_at_r",
        "recall_at_{k}" for each k in `ks`, over the queries with at least one relevant
        reference.

    Raises:
        ValueError: bad shapes, NaN or inf values, bad `ks` or `chunk_size`, references without
            labels (or the reverse), or no query with a relevant reference.
    """
    return retrieve(embeddings, labels, reference_embeddings, reference_labels, ks,
                    chunk_size=chunk_size).metrics


def retrieve(embeddings, labels, reference_embeddings=None, reference_labels=None,
             ks=DEFAULT_KS, *, chunk_size=None):
    """`retrieval_metrics` with each query's nearest references and the query counts.

    Args: as for `retrieval_metrics`.

    Returns:
        A `RetrievalResult`.

    Raises:
        ValueError: as for `retrieval_metrics`.
    """
    queries = features.check_features(embeddings, "embeddings")
    labels = features.check_class_ids(labels, queries.shape[0], "labels")
    leave_one_out = reference_embeddings is None
    if leave_one_out != (reference_labels is None):
        raise ValueError("reference_embeddings and reference_labels go together: pass both "
                         "(a separate gallery) or neither (leave-one-out within embeddings).")
    if leave_one_out:
        references, reference_labels = queries, labels
        if queries.shape[0] < 2:
            raise ValueError(f"leave-one-out retrieval needs at least 2 embeddings; received "
                             f"{queries.shape[0]}. Pass more, or reference_embeddings.")
    else:
        references = features.check_features(reference_embeddings, "reference_embeddings")
        reference_labels = features.check_class_ids(reference_labels, references.shape[0],
                                                    "reference_labels")
        features.check_same_dim(references, queries, "reference_embeddings", "embeddings")
    available = references.shape[0] - int(leave_one_out)  # references of every query
    ks = _check_ks(ks, available)
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // references.shape[0])
    chunk_size = features.check_positive_int("chunk_size", chunk_size, "Pass e.g. 256.")

    relevant_counts = _relevant_counts(labels, reference_labels, leave_one_out)  # R_q, [N]
    scored = relevant_counts > 0
    if not scored.any():
        raise ValueError("no query has a relevant reference (no reference carries any query's "
                         "label; in leave-one-out every label occurs once): retrieval metrics "
                         "are undefined. Check the labels and the class split.")
    query_unit = features.l2_normalize(queries)  # float64: ranks follow the exact cosine
    reference_unit = query_unit if leave_one_out else features.l2_normalize(references)
    max_k = max(ks)
    neighbours = np.empty((queries.shape[0], max_k), np.int64)
    per_query = {"precision_at_1": np.zeros(queries.shape[0]),
                 "r_precision": np.zeros(queries.shape[0]),
                 "map_at_r": np.zeros(queries.shape[0]),
                 **{f"recall_at_{k}": np.zeros(queries.shape[0]) for k in ks}}
    for start in range(0, queries.shape[0], chunk_size):
        stop = min(start + chunk_size, queries.shape[0])
        similarity = query_unit[start:stop] @ reference_unit.T  # [chunk, num_references]
        if leave_one_out:  # ranks the query itself last: depth <= available never reaches it
            similarity[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        counts = relevant_counts[start:stop]
        depth = max(max_k, int(counts.max()))
        ranked = _top_ranked(similarity, depth)  # [chunk, depth]
        neighbours[start:stop] = ranked[:, :max_k]
        relevant = reference_labels[ranked] == labels[start:stop, None]  # rel(i), [chunk, depth]
        for name, values in _chunk_metrics(relevant, counts, ks).items():
            per_query[name][start:stop] = values
    metrics = {name: float(np.mean(values[scored])) for name, values in per_query.items()}
    return RetrievalResult(metrics=metrics, neighbours=neighbours,
                           num_queries=int(scored.sum()),
                           num_without_reference=int((~scored).sum()))


def _check_ks(ks, available):
    """`ks` as a tuple of distinct ints in [1, available]."""
    if isinstance(ks, (int, np.integer)) or not hasattr(ks, "__iter__"):
        raise ValueError(f"ks must be a sequence of ints such as (1, 2, 4, 8); received {ks!r}.")
    ks = tuple(features.check_positive_int("each k of ks", k, "Pass e.g. ks=(1, 2, 4, 8).")
               for k in ks)
    if not ks:
        raise ValueError("ks is empty; pass e.g. ks=(1, 2, 4, 8).")
    if len(set(ks)) != len(ks):
        raise ValueError(f"ks lists a k twice: {ks}; pass distinct values.")
    if max(ks) > available:
        raise ValueError(f"k={max(ks)} exceeds the {available} references of each query; pass "
                         "smaller ks or more references.")
    return ks


def _relevant_counts(labels, reference_labels, leave_one_out):
    """R_q: int64 [num_queries], the references carrying each query's label (self excluded)."""
    classes, class_counts = np.unique(reference_labels, return_counts=True)
    position = np.clip(np.searchsorted(classes, labels), 0, len(classes) - 1)
    counts = np.where(classes[position] == labels, class_counts[position], 0)
    return counts - 1 if leave_one_out else counts


def _top_ranked(similarity, depth):
    """The first `depth` ranks of each row: indices by decreasing similarity, ties by index.

    Args:
        similarity: float64 [chunk, num_references].
        depth: Python int in [1, num_references].

    Returns:
        int64 [chunk, depth] column indices, best first.
    """
    rows, num_references = similarity.shape
    if depth < num_references:
        # The depth-th largest value of each row; every larger value is in, and of the values
        # equal to it the lowest indices fill the remaining places (np.argpartition alone
        # would pick among equal values arbitrarily).
        threshold = np.partition(similarity, num_references - depth, axis=1)[
            :, num_references - depth, None]  # [chunk, 1]
        above = similarity > threshold
        tied = similarity == threshold
        room = depth - above.sum(axis=1, keepdims=True)  # [chunk, 1], >= 1
        chosen = above | (tied & (np.cumsum(tied, axis=1, dtype=np.int32) <= room))
        candidates = np.nonzero(chosen)[1].reshape(rows, depth)  # increasing index per row
    else:
        candidates = np.broadcast_to(np.arange(num_references), (rows, num_references))
    values = np.take_along_axis(similarity, candidates, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")  # stable: equal values keep index order
    return np.take_along_axis(candidates, order, axis=1).astype(np.int64)


def _chunk_metrics(relevant, counts, ks):
    """Per-query metrics of a chunk.

    Args:
        relevant: bool [chunk, depth], rel(i) of the first depth ranks (depth >= max R_q, max k).
        counts: int [chunk], R_q (0 for queries left out; their values are then 0).
        ks: tuple of ints.

    Returns:
        dict name -> float64 [chunk].
    """
    depth = relevant.shape[1]
    within_r = np.arange(1, depth + 1)[None, :] <= counts[:, None]  # i <= R_q, [chunk, depth]
    hits = relevant & within_r
    precision = np.cumsum(relevant, axis=1) / np.arange(1, depth + 1)[None, :]  # P(i)
    safe_counts = np.maximum(counts, 1)
    values = {"precision_at_1": relevant[:, 0].astype(np.float64),
              "r_precision": hits.sum(axis=1) / safe_counts,
              "map_at_r": np.where(hits, precision, 0.0).sum(axis=1) / safe_counts}
    for k in ks:
        values[f"recall_at_{k}"] = relevant[:, :k].any(axis=1).astype(np.float64)
    return values
