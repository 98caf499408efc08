"""Tests of `supcon_tf.evaluation.retrieval`: against a plain per-query loop with a full sort
(`helpers.naive_retrieval_metrics`) on random data with and without ties, chunk sizes smaller
than the gallery; two hand-computed cases (closed forms in the comments); recall@k and the
neighbours against scikit-learn's brute-force `NearestNeighbors`; the chunk bound; bad inputs.
"""

import numpy as np
import pytest
from helpers import naive_rankings
from helpers import naive_retrieval_metrics

from supcon_tf.evaluation import retrieval


def _gaussian(rng, num, dim, num_classes):
    return rng.normal(size=(num, dim)), rng.integers(0, num_classes, num)


def _tied(rng, num, num_classes):
    """Rows of four entries +-0.5 among 8 (unit norm, exact), scaled by powers of two: every
    cosine is a multiple of 0.25 computed exactly in any order, so ties are exact and many."""
    rows = np.zeros((num, 8))
    for row in rows:
        row[rng.choice(8, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    rows *= 2.0 ** rng.integers(-3, 4, (num, 1))
    return rows, rng.integers(0, num_classes, num)


def _case(name, rng):
    """(queries, labels, references or None, reference labels or None, ks)."""
    if name == "gaussian_leave_one_out":
        return (*_gaussian(rng, 70, 5, 6), None, None, (1, 2, 4, 8))
    if name == "gaussian_gallery":  # gallery classes 0..7, queries 0..9: some left out
        queries, labels = _gaussian(rng, 50, 6, 10)
        references, reference_labels = _gaussian(rng, 90, 6, 8)
        return queries, labels, references, reference_labels, (1, 3, 10)
    if name == "ties_leave_one_out":
        return (*_tied(rng, 80, 5), None, None, (1, 2, 4, 8, 16))
    if name == "ties_gallery":
        queries, labels = _tied(rng, 40, 4)
        return (queries, labels, *_tied(rng, 60, 5), (2, 1, 5))
    if name == "one_big_class":  # R = gallery - 1 for most queries: the full-sort path
        queries, labels = _gaussian(rng, 40, 4, 1)
        labels[:3] = [1, 1, 2]  # one pair, one lone query
        return queries, labels, None, None, (1, 2)
    raise ValueError(name)


CASES = ("gaussian_leave_one_out", "gaussian_gallery", "ties_leave_one_out", "ties_gallery",
         "one_big_class")


@pytest.mark.parametrize("chunk_size", [1, 7, None])
@pytest.mark.parametrize("case", CASES)
def test_matches_naive_loop(case, chunk_size):
    queries, labels, references, reference_labels, ks = _case(case, np.random.default_rng(3))
    result = retrieval.retrieve(queries, labels, references, reference_labels, ks,
                                chunk_size=chunk_size)
    expected, left_out = naive_retrieval_metrics(queries, labels, references, reference_labels,
                                                 ks)
    assert result.metrics.keys() == expected.keys()
    for name, value in expected.items():
        assert result.metrics[name] == pytest.approx(value, abs=1e-12), name
        assert isinstance(result.metrics[name], float)
    assert result.num_without_reference == left_out
    assert result.num_queries == len(labels) - left_out
    rankings = naive_rankings(queries, references)
    np.testing.assert_array_equal(result.neighbours, [ranking[:max(ks)] for ranking in rankings])
    assert retrieval.retrieval_metrics(queries, labels, references, reference_labels, ks,
                                       chunk_size=chunk_size) == result.metrics


def test_ties_are_many_in_the_tied_cases():
    queries, _, _, _, _ = _case("ties_leave_one_out", np.random.default_rng(3))
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    similarity = unit @ unit.T
    assert len(np.unique(similarity)) <= 9  # multiples of 0.25 in [-1, 1]


def _angles(*degrees):
    radians = np.deg2rad(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


def test_gallery_closed_form():
    references = np.array([[1, 0], [np.cos(np.pi / 6), np.sin(np.pi / 6)],
                           [np.cos(np.pi / 3), np.sin(np.pi / 3)], [0, 1], [-1, 0]])
    reference_labels = [0, 1, 0, 0, 1]
    queries = np.array([[1, 0], [-1, 0], [0, -1], [0, 1]])
    labels = [0, 1, 0, 2]
    # (1, 0), label 0: ranks r0+ r1- r2+ r3+ r4-; R = 3: AP@R = (1/1 + 2/3) / 3 = 5/9, R-prec 2/3.
    # (-1, 0), label 1: ranks r4+ r3- r2- r1+ r0-; R = 2: AP@R = (1/1) / 2 = 1/2, R-prec 1/2.
    # (0, -1), label 0: r0 and r4 tie at cosine 0, r0 (lower index) first: r0+ r4- r1- r2+ r3+;
    #   R = 3: AP@R = (1/1) / 3 = 1/3 (r4 first would give 1/6), R-prec 1/3.
    # (0, 1), label 2: no reference has label 2: left out.
    metrics = retrieval.retrieval_metrics(queries, labels, references, reference_labels,
                                          ks=(1, 2))
    assert metrics == pytest.approx({
        "precision_at_1": 1.0, "r_precision": (2 / 3 + 1 / 2 + 1 / 3) / 3,
        "map_at_r": (5 / 9 + 1 / 2 + 1 / 3) / 3, "recall_at_1": 1.0, "recall_at_2": 1.0},
        abs=1e-12)
    assert retrieval.retrieve(queries, labels, references, reference_labels,
                              ks=(1, 2)).num_without_reference == 1


def test_leave_one_out_closed_form():
    embeddings = _angles(0, 20, 45, 75)
    labels = [0, 1, 0, 0]
    # 0 deg: ranks 20- 45+ 75+, R = 2: AP@R = (1/2) / 2 = 1/4, R-prec 1/2, P@1 0, hit@2.
    # 20 deg: label 1 occurs once: left out.
    # 45 deg: ranks 20- (25 deg away) 75+ (30) 0+ (45): AP@R = 1/4, R-prec 1/2, P@1 0, hit@2.
    # 75 deg: ranks 45+ (30) 20- (55) 0+ (75): AP@R = (1/1) / 2 = 1/2, R-prec 1/2, P@1 1.
    metrics = retrieval.retrieval_metrics(embeddings * [[1], [3], [0.5], [2]], labels, ks=(1, 2))
    assert metrics == pytest.approx({
        "precision_at_1": 1 / 3, "r_precision": 1 / 2, "map_at_r": (1 / 4 + 1 / 4 + 1 / 2) / 3,
        "recall_at_1": 1 / 3, "recall_at_2": 1.0}, abs=1e-12)


def test_recall_and_neighbours_match_sklearn_nearest_neighbors():
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(7)
    references, reference_labels = _gaussian(rng, 300, 16, 12)
    queries, labels = _gaussian(rng, 120, 16, 12)
    ks = (1, 5, 20)
    result = retrieval.retrieve(queries, labels, references, reference_labels, ks,
                                chunk_size=32)
    search = NearestNeighbors(n_neighbors=max(ks), metric="cosine", algorithm="brute")
    _, indices = search.fit(references).kneighbors(queries)
    np.testing.assert_array_equal(result.neighbours, indices)
    for k in ks:
        hits = (reference_labels[indices[:, :k]] == labels[:, None]).any(axis=1)
        assert result.metrics[f"recall_at_{k}"] == pytest.approx(hits.mean(), abs=1e-12)


def test_memory_stays_within_one_chunk(monkeypatch):
    """Every ranked block has at most `chunk_size` rows, and only max(R, k) ranks are kept."""
    shapes = []
    top_ranked = retrieval._top_ranked

    def recording(similarity, depth):
        shapes.append((similarity.shape, depth))
        return top_ranked(similarity, depth)

    monkeypatch.setattr(retrieval, "_top_ranked", recording)
    rng = np.random.default_rng(0)
    embeddings, labels = _gaussian(rng, 100, 4, 20)
    retrieval.retrieval_metrics(embeddings, labels, ks=(1, 2), chunk_size=16)
    assert [shape for shape, _ in shapes] == [(16, 100)] * 6 + [(4, 100)]
    counts = np.bincount(labels)[labels] - 1
    assert [depth for _, depth in shapes] == [
        max(2, int(counts[start:start + 16].max())) for start in range(0, 100, 16)]


def test_default_chunk_bounds_the_block(monkeypatch):
    monkeypatch.setattr(retrieval, "_CHUNK_ELEMENTS", 250)
    rows = []
    top_ranked = retrieval._top_ranked
    monkeypatch.setattr(retrieval, "_top_ranked",
                        lambda similarity, depth: rows.append(similarity.shape[0]) or
                        top_ranked(similarity, depth))
    embeddings, labels = _gaussian(np.random.default_rng(1), 60, 3, 4)
    retrieval.retrieval_metrics(embeddings, labels)
    assert max(rows) == 250 // 60 and sum(rows) == 60


BAD_INPUTS = {
    "rank": (dict(embeddings=np.zeros(5)), "embeddings must be float"),
    "nan": (dict(embeddings=np.full((4, 2), np.nan)), "NaN or inf"),
    "labels_shape": (dict(labels=[0, 1]), "labels must be int"),
    "float_labels": (dict(labels=np.full(6, 0.5)), "class ids"),
    "references_alone": (dict(reference_embeddings=np.ones((3, 2))), "go together"),
    "labels_alone": (dict(reference_labels=[0, 1, 0]), "go together"),
    "dim": (dict(reference_embeddings=np.ones((3, 5)), reference_labels=[0, 1, 0]),
            "must have reference_embeddings's dim"),
    "reference_nan": (dict(reference_embeddings=np.full((3, 2), np.inf),
                           reference_labels=[0, 1, 0]), "reference_embeddings holds NaN"),
    "ks_int": (dict(ks=4), "ks must be a sequence"),
    "ks_empty": (dict(ks=()), "ks is empty"),
    "ks_zero": (dict(ks=(0, 1)), "must be a positive int"),
    "ks_float": (dict(ks=(1.5,)), "must be a positive int"),
    "ks_twice": (dict(ks=(1, 1)), "lists a k twice"),
    "ks_too_big": (dict(ks=(1, 6)), "exceeds the 5 references"),
    "chunk": (dict(chunk_size=0), "chunk_size must be a positive int"),
    "one_embedding": (dict(embeddings=np.ones((1, 2)), labels=[0], ks=(1,)),
                      "at least 2 embeddings"),
    "all_lone": (dict(labels=np.arange(6)), "no query has a relevant reference"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_clear_error(case):
    arguments = dict(embeddings=np.random.default_rng(0).normal(size=(6, 2)),
                     labels=[0, 1, 0, 1, 2, 2], ks=(1, 2))
    overrides, message = BAD_INPUTS[case]
    arguments.update(overrides)
    with pytest.raises(ValueError) as info:
        retrieval.retrieval_metrics(**arguments)
    assert message in str(info.value) and "\n" not in str(info.value)
