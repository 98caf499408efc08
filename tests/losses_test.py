"""Tests for supcon_tf.losses against naive numpy references, closed forms and one device."""

import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import hypothesis
import hypothesis.strategies as st
import keras
import numpy as np
import pytest
import tensorflow as tf

import loss_reference as ref
from supcon_tf import losses

TETRAHEDRON = np.array([
    [0.0, 0.0, 1.0],
    [0.0, 2 * math.sqrt(2) / 3, -1 / 3],
    [math.sqrt(6) / 3, -math.sqrt(2) / 3, -1 / 3],
    [-math.sqrt(6) / 3, -math.sqrt(2) / 3, -1 / 3],
])


def _unit_features(batch, views, dim, seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(batch, views, dim))
    return (z / np.linalg.norm(z, axis=-1, keepdims=True)).astype(dtype)


def _labels(batch, num_classes, seed=1):
    return np.random.default_rng(seed).integers(0, num_classes, size=batch)


def _label_sets(batch, num_classes, seed=2, empty_rows=(0,)):
    """Random 0/1 label sets `[batch, num_classes]`, rows `empty_rows` all zero."""
    sets = (np.random.default_rng(seed).random((batch, num_classes)) < 0.4).astype("int64")
    sets[list(empty_rows)] = 0
    return sets


# ------------------------------------------------------------------------------------------
# contrastive_loss against the naive reference.
# ------------------------------------------------------------------------------------------

OPTION_GRID = list(itertools.product(
    ("outside", "inside"), ("all", "one_positive", "only_negatives"),
    (-1, 0, 2, 5), ("all_views", "one_view")))


@pytest.mark.parametrize("summation,denominator,positives_cap,contrast_mode", OPTION_GRID,
                         ids=["-".join(map(str, o)) for o in OPTION_GRID])
# One view without labels has no positive at all: an error, tested with the bad inputs.
# "sets": multi-hot label sets (multi-label SupCon, Jaccard weights), one of them empty.
@pytest.mark.parametrize("views,labels_kind", [
    (1, "ids"), (2, "ids"), (3, "ids"), (4, "ids"), (2, None), (3, None), (4, None),
    (1, "sets"), (2, "sets"), (3, "sets")])
def test_contrastive_loss_matches_reference(summation, denominator, positives_cap,
                                            contrast_mode, views, labels_kind):
    batch = 7
    features = _unit_features(batch, views, 5, seed=views)
    labels = {"ids": _labels(batch, 3, seed=views), None: None,
              "sets": _label_sets(batch, 4, seed=views)}[labels_kind]
    options = dict(temperature=0.3, contrast_mode=contrast_mode, summation=summation,
                   denominator=denominator, positives_cap=positives_cap)
    got = losses.contrastive_loss(features, labels, **options)
    want = ref.supcon(features, labels, **options)
    assert got.dtype == "float32" and tuple(got.shape) == (batch,)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(
    batch=st.integers(2, 9), views=st.integers(1, 4), num_classes=st.integers(1, 5),
    temperature=st.sampled_from([0.05, 0.1, 0.5, 1.0]), seed=st.integers(0, 10_000),
    scale=st.booleans())
def test_default_options_match_reference_on_random_batches(batch, views, num_classes,
                                                           temperature, seed, scale):
    features = _unit_features(batch, views, 4, seed=seed)
    labels = _labels(batch, num_classes, seed=seed + 1)
    got = losses.contrastive_loss(
        features, labels, temperature=temperature, scale_by_temperature=scale)
    want = ref.supcon(features, labels, temperature=temperature, scale_by_temperature=scale)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("form", ["int", "column", "one_hot", "float", "sparse_ids"])
def test_label_forms_agree(form):
    features = _unit_features(6, 2, 4)
    labels = np.array([0, 2, 0, 1, 2, 2])
    converted = {
        "int": labels,
        "column": labels[:, None],
        "one_hot": np.eye(3)[labels],
        "float": labels.astype("float32"),
        "sparse_ids": labels * 1000 - 7,  # Arbitrary, negative, non-contiguous ids.
    }[form]
    np.testing.assert_allclose(
        losses.contrastive_loss(features, converted), ref.supcon(features, labels), rtol=2e-5)


def test_labels_none_equals_all_distinct_labels():
    features = _unit_features(5, 2, 4)
    np.testing.assert_allclose(
        losses.contrastive_loss(features, None),
        losses.contrastive_loss(features, np.arange(5)), rtol=1e-6)


def test_trailing_dims_are_flattened():
    features = _unit_features(4, 2, 6).reshape(4, 2, 2, 3)
    labels = np.array([0, 1, 0, 1])
    np.testing.assert_allclose(
        losses.contrastive_loss(features, labels),
        ref.supcon(features.reshape(4, 2, 6), labels), rtol=2e-5)


def test_large_cap_equals_no_cap():
    features = _unit_features(8, 2, 4)
    labels = _labels(8, 2)
    np.testing.assert_allclose(
        losses.contrastive_loss(features, labels, positives_cap=100),
        losses.contrastive_loss(features, labels), rtol=1e-5)


def test_cap_keeps_first_positives_in_batch_order():
    # Sample 0 has same-class samples 2, 3, 5; cap 2 with 2 views keeps only sample 2, so
    # moving sample 5 (removed by the cap) must not change sample 0's loss.
    features = _unit_features(6, 2, 4)
    labels = np.array([0, 1, 0, 0, 1, 0])
    moved = features.copy()
    moved[5] = _unit_features(1, 2, 4, seed=99)[0]
    before = losses.contrastive_loss(features, labels, positives_cap=2)
    after = losses.contrastive_loss(moved, labels, positives_cap=2)
    np.testing.assert_allclose(before[0], after[0], rtol=1e-6)
    # Without the cap sample 5 is one of sample 0's positives, and moving it matters.
    assert not np.isclose(losses.contrastive_loss(features, labels)[0],
                          losses.contrastive_loss(moved, labels)[0])


def test_simclr_formulation_is_twice_the_mean_nt_xent():
    features = _unit_features(6, 2, 5)
    got = 2.0 * float(np.mean(losses.nt_xent_loss(features, temperature=0.5)))
    np.testing.assert_allclose(got, ref.simclr_nt_xent(features, 0.5), rtol=1e-5)


# ------------------------------------------------------------------------------------------
# Memory keys (the rebuttal's MoCo-style queue).
# ------------------------------------------------------------------------------------------

MEMORY_GRID = list(itertools.product(
    ("outside", "inside"), ("all", "one_positive", "only_negatives"), ("all_views", "one_view"),
    ("ids", None, "sets")))


def _memory_labels(labels_kind):
    """Labels of 6 samples and of 9 memory keys (-1 / rows of -1: empty slots, left out)."""
    if labels_kind != "sets":
        return (_labels(6, 3, seed=7) if labels_kind else None,
                np.array([0, 1, 2, -1, 0, 2, -1, 1, 0]))
    key_sets = _label_sets(9, 4, seed=19, empty_rows=(1,))
    key_sets[[3, 6]] = -1
    return _label_sets(6, 4, seed=17), key_sets


@pytest.mark.parametrize("summation,denominator,contrast_mode,labels_kind", MEMORY_GRID)
def test_memory_keys_match_reference(summation, denominator, contrast_mode, labels_kind):
    features = _unit_features(6, 2, 5, seed=7)
    labels, key_labels = _memory_labels(labels_kind)
    keys = _unit_features(9, 1, 5, seed=8)[:, 0]
    options = dict(temperature=0.2, summation=summation, denominator=denominator,
                   contrast_mode=contrast_mode)
    got = losses.contrastive_loss(features, labels, memory_features=keys,
                                  memory_labels=key_labels, **options)
    want = ref.supcon(features, labels, memory_features=keys, memory_labels=key_labels,
                      **options)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_memory_keys_get_no_gradient_and_features_match_finite_differences():
    features = _unit_features(5, 2, 3, seed=9, dtype="float64")
    labels = np.array([0, 1, 0, 1, 2])
    keys = tf.constant(_unit_features(4, 1, 3, seed=10)[:, 0])
    key_labels = np.array([2, 0, -1, 1])
    x = tf.constant(features)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, keys])
        total = tf.reduce_sum(losses.contrastive_loss(
            x, labels, temperature=0.5, memory_features=keys, memory_labels=key_labels))
    key_grad = tape.gradient(total, keys)
    assert key_grad is None or np.all(key_grad.numpy() == 0)
    analytic = tape.gradient(total, x).numpy()
    numeric = np.zeros_like(features)
    for index in np.ndindex(features.shape):
        plus, minus = features.copy(), features.copy()
        plus[index] += 1e-3
        minus[index] -= 1e-3
        numeric[index] = (np.sum(ref.supcon(plus, labels, 0.5, memory_features=keys.numpy(),
                                             memory_labels=key_labels))
                          - np.sum(ref.supcon(minus, labels, 0.5, memory_features=keys.numpy(),
                                              memory_labels=key_labels))) / 2e-3
    np.testing.assert_allclose(analytic, numeric, rtol=2e-3, atol=2e-4)


def test_empty_memory_equals_no_memory():
    features = _unit_features(6, 2, 4)
    labels = _labels(6, 3)
    np.testing.assert_allclose(
        losses.contrastive_loss(features, labels, memory_features=np.ones((5, 4), "float32"),
                                memory_labels=-np.ones(5, int)),
        losses.contrastive_loss(features, labels), rtol=1e-6)


@pytest.mark.parametrize("kwargs,message", [
    (dict(memory_features=np.zeros((3, 7), "float32"), memory_labels=np.zeros(3, int)),
     r"memory_features must be \[memory, 8\]"),
    (dict(memory_features=np.zeros((3, 8), "float32")), r"need memory_labels"),
    (dict(memory_labels=np.zeros(3, int)), r"without memory_features"),
    (dict(memory_features=np.zeros((3, 8), "float32"), memory_labels=np.zeros(3, int),
          positives_cap=2), r"positives_cap is not supported with a memory queue"),
])
def test_bad_memory_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        losses.contrastive_loss(_unit_features(4, 2, 8), np.array([0, 1, 0, 1]), **kwargs)


# ------------------------------------------------------------------------------------------
# Closed forms.
# ------------------------------------------------------------------------------------------


def test_tetrahedron_gives_ln3_for_every_anchor():
    # 2 samples x 2 views, every pairwise dot product -1/3: every logit equal, so each anchor's
    # single positive is 1 of 3 equal terms.
    features = TETRAHEDRON.reshape(2, 2, 3).astype("float32")
    got = losses.contrastive_loss(features, None, temperature=1.0)
    np.testing.assert_allclose(got, [math.log(3)] * 2, rtol=1e-6)


@pytest.mark.parametrize("views", [2, 3])
@pytest.mark.parametrize("temperature,scale", [(0.1, True), (0.5, False)])
def test_collapsed_embeddings_give_log_of_contrast_size(views, temperature, scale):
    batch = 8
    features = np.tile(_unit_features(1, 1, 16), (batch, views, 1))
    got = losses.contrastive_loss(
        features, _labels(batch, 3), temperature=temperature, scale_by_temperature=scale)
    want = math.log(batch * views - 1) * (temperature if scale else 1.0)
    np.testing.assert_allclose(got, [want] * batch, rtol=1e-5)
    assert losses.collapse_value(batch, views, temperature, scale) == pytest.approx(want)


def test_inside_is_at_most_outside():
    features = _unit_features(10, 3, 6)
    labels = _labels(10, 3)
    inside = losses.contrastive_loss(features, labels, summation="inside")
    outside = losses.contrastive_loss(features, labels, summation="outside")
    assert np.all(np.asarray(inside) <= np.asarray(outside) + 1e-6)


# ------------------------------------------------------------------------------------------
# Gradients.
# ------------------------------------------------------------------------------------------


def _gradient(fn, features):
    x = tf.constant(features)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = fn(x)
    return tape.gradient(value, x).numpy()


@pytest.mark.parametrize("summation,denominator,positives_cap", [
    ("outside", "all", -1), ("inside", "all", -1), ("outside", "one_positive", 2),
    ("inside", "only_negatives", -1)])
@pytest.mark.parametrize("labels", [
    np.array([0, 1, 0, 1, 1]), np.array([[1, 1, 0], [0, 1, 0], [1, 0, 1], [0, 0, 0], [0, 1, 1]])],
    ids=["ids", "sets"])
def test_gradient_matches_finite_differences(summation, denominator, positives_cap, labels):
    features = _unit_features(5, 2, 3, seed=3, dtype="float64")
    options = dict(temperature=0.5, summation=summation, denominator=denominator,
                   positives_cap=positives_cap)
    weights = np.random.default_rng(4).normal(size=5)

    def objective(x):  # A weighted sum makes every sample's gradient count differently.
        return tf.reduce_sum(losses.contrastive_loss(x, labels, **options) * weights)

    analytic = _gradient(objective, features)
    numeric = np.zeros_like(features)
    step = 1e-2
    for index in np.ndindex(features.shape):
        plus, minus = features.copy(), features.copy()
        plus[index] += step
        minus[index] -= step
        # Central differences of the float64 reference: exact up to O(step^2).
        numeric[index] = (np.sum(ref.supcon(plus, labels, **options) * weights)
                          - np.sum(ref.supcon(minus, labels, **options) * weights)) / (2 * step)
    np.testing.assert_allclose(analytic, numeric, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("summation", ["outside", "inside"])
def test_anchor_gradient_matches_paper_eq_4_to_6(summation):
    # With contrast_mode="one_view", sample i's loss is that of anchor (i, view 0), and that
    # feature row appears in it only as the anchor, so d loss_i / d z_i is Eq. 4 with
    # X_ip = 1/|P(i)| (Eq. 5, L_out) or exp(z_i.z_p/tau) / sum_p' exp(z_i.z_p'/tau) (Eq. 6, L_in).
    tau = 0.2
    features = _unit_features(6, 2, 4, seed=5)
    labels = np.array([0, 1, 0, 2, 1, 0])
    batch, views, _ = features.shape
    for i in range(batch):
        grad = _gradient(lambda x, i=i: losses.contrastive_loss(
            x, labels, temperature=tau, contrast_mode="one_view", summation=summation,
            scale_by_temperature=False)[i], features)[i, 0]
        z_i = features[i, 0].astype(np.float64)
        others = [(j, u) for j in range(batch) for u in range(views) if (j, u) != (i, 0)]
        logits = np.array([z_i @ features[j, u] for j, u in others]) / tau
        softmax = np.exp(logits - logits.max())
        softmax /= softmax.sum()
        is_positive = np.array([labels[j] == labels[i] for j, _ in others])
        if summation == "outside":
            x = np.where(is_positive, 1.0 / is_positive.sum(), 0.0)
        else:
            e = np.where(is_positive, np.exp(logits - logits.max()), 0.0)
            x = e / e.sum()
        vectors = np.array([features[j, u] for j, u in others], np.float64)
        # Eq. 4: (1/tau) [sum_p z_p (P_ip - X_ip) + sum_n z_n P_in].
        want = (vectors * np.where(is_positive, softmax - x, softmax)[:, None]).sum(0) / tau
        np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------
# Numerics.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("case", ["tau_0.01", "identical", "single_label", "no_positive"])
@pytest.mark.parametrize("denominator", ["all", "one_positive", "only_negatives"])
def test_no_nan_or_inf_in_loss_or_gradient(dtype, case, denominator):
    batch, views = 8, 2
    features = _unit_features(batch, views, 8)
    labels = _labels(batch, 3)
    temperature = 0.1
    if case == "tau_0.01":
        temperature = 0.01
    elif case == "identical":
        features = np.tile(features[:1, :1], (batch, views, 1))
    elif case == "single_label":
        labels = np.zeros(batch, int)
    elif case == "no_positive":  # One view, every label unique but two.
        views, features, labels = 1, features[:, :1], np.array([0, 1, 2, 3, 4, 5, 6, 6])
    x = tf.cast(tf.constant(features), dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = losses.contrastive_loss(
            x, labels, temperature=temperature, denominator=denominator)
        total = tf.reduce_sum(loss)
    grad = tape.gradient(total, x)
    assert loss.dtype == tf.float32
    assert np.all(np.isfinite(loss.numpy()))
    assert np.all(np.isfinite(tf.cast(grad, tf.float32).numpy()))
    if case == "no_positive":
        np.testing.assert_array_equal(loss.numpy()[:6], 0.0)  # Documented: no positive -> 0.
        assert np.all(loss.numpy()[6:] > 0)
    if case == "single_label" and denominator == "only_negatives":
        np.testing.assert_array_equal(loss.numpy(), 0.0)  # Empty denominator -> 0.
    if dtype == "float32" and case != "identical":
        np.testing.assert_allclose(loss, ref.supcon(
            features, labels, temperature=temperature, denominator=denominator),
            rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("labels", [_labels(8, 3), _label_sets(8, 4)], ids=["ids", "sets"])
def test_traced_and_xla_compiled_match_eager(labels):
    features = tf.constant(_unit_features(8, 2, 6))
    labels = tf.constant(labels)
    eager = losses.contrastive_loss(features, labels)
    for jit in (False, True):
        fn = tf.function(lambda f, y: losses.contrastive_loss(f, y), jit_compile=jit)
        np.testing.assert_allclose(fn(features, labels), eager, rtol=1e-5)


# ------------------------------------------------------------------------------------------
# Multi-label SupCon: Jaccard-weighted positives for label sets.
# ------------------------------------------------------------------------------------------


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(
    batch=st.integers(2, 8), views=st.integers(1, 3), num_classes=st.integers(2, 6),
    density=st.sampled_from([0.1, 0.4, 0.8]), temperature=st.sampled_from([0.05, 0.1, 1.0]),
    seed=st.integers(0, 10_000), scale=st.booleans())
def test_multilabel_default_matches_reference_on_random_batches(
        batch, views, num_classes, density, temperature, seed, scale):
    features = _unit_features(batch, views, 4, seed=seed)
    label_sets = (np.random.default_rng(seed + 1).random((batch, num_classes))
                  < density).astype("float32")
    got = losses.contrastive_loss(
        features, label_sets, temperature=temperature, scale_by_temperature=scale)
    want = ref.supcon(
        features, label_sets, temperature=temperature, scale_by_temperature=scale)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_multilabel_closed_form_on_three_samples():
    # One view, tau = 1. z0 = (1, 0), z1 = (0, 1), z2 = (-1, 0); label sets {a, b}, {a},
    # {b, c}: w01 = 1/2, w02 = 1/3, w12 = 0. Logits z0.z1 = 0, z0.z2 = -1, z1.z2 = 0.
    # Anchor 0: p01 = 1/(1 + 1/e), p02 = (1/e)/(1 + 1/e), so
    #   L0 = -(1/2 log p01 + 1/3 log p02) / (5/6) = log(1 + 1/e) + 2/5.
    # Anchor 1: its one positive 0 has p10 = 1/2 (equal logits): L1 = log 2.
    # Anchor 2: its one positive 0 has p20 = e^-1 / (e^-1 + 1): L2 = log(1 + e).
    features = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[-1.0, 0.0]]], "float32")
    label_sets = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1]])
    want = [math.log(1 + 1 / math.e) + 0.4, math.log(2.0), math.log(1 + math.e)]
    np.testing.assert_allclose(
        losses.contrastive_loss(features, label_sets, temperature=1.0), want, rtol=1e-6)
    # The masked path (summation "outside" via a cap that keeps everything) agrees.
    np.testing.assert_allclose(losses.contrastive_loss(
        features, label_sets, temperature=1.0, positives_cap=10), want, rtol=1e-6)


# (options, whether they take the masked path)
ONE_HOT_OPTIONS = [
    (dict(), False), (dict(temperature=0.05, scale_by_temperature=False), False),
    (dict(summation="inside"), True), (dict(denominator="one_positive", positives_cap=2), True),
    (dict(denominator="only_negatives", contrast_mode="one_view"), True)]


@pytest.mark.parametrize("options,masked", ONE_HOT_OPTIONS, ids=lambda o: str(o))
@pytest.mark.parametrize("views", [1, 2, 3])
def test_one_hot_label_sets_equal_int_labels(options, masked, views):
    features = _unit_features(9, views, 6, seed=views)
    labels = _labels(9, 4, seed=views)
    got = losses.contrastive_loss(features, np.eye(4)[labels], **options)
    want = losses.contrastive_loss(features, labels, **options)
    # Weights of exactly 1 / 0: the default path sums positives by a matrix product instead
    # of per-class sums (float32 rounding); the masked paths give the same bits.
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    if masked:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("summation", ["outside", "inside"])
@pytest.mark.parametrize("contrast_mode", ["all_views", "one_view"])
def test_one_hot_label_sets_equal_int_labels_with_a_memory_queue(summation, contrast_mode):
    features = _unit_features(6, 2, 5, seed=7)
    labels = _labels(6, 3, seed=7)
    keys = _unit_features(9, 1, 5, seed=8)[:, 0]
    key_labels = np.array([0, 1, 2, -1, 0, 2, -1, 1, 0])
    key_sets = np.where(key_labels[:, None] >= 0, np.eye(3)[key_labels], -1)  # -1 rows: empty
    options = dict(temperature=0.2, summation=summation, contrast_mode=contrast_mode)
    got = losses.contrastive_loss(features, np.eye(3)[labels], memory_features=keys,
                                  memory_labels=key_sets, **options)
    want = losses.contrastive_loss(features, labels, memory_features=keys,
                                   memory_labels=key_labels, **options)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("memory_labels,message", [
    (np.zeros(3, int), r"do not match labels of shape \(4, 3\)"),
    (np.zeros((3, 5), int), r"memory_labels have 5 classes but labels have 3"),
])
def test_multilabel_memory_labels_of_another_form_raise(memory_labels, message):
    with pytest.raises(ValueError, match=message):
        losses.contrastive_loss(_unit_features(4, 2, 8), np.eye(3)[[0, 1, 2, 0]],
                                memory_features=np.zeros((3, 8), "float32"),
                                memory_labels=memory_labels)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("temperature", [0.01, 0.1])
@pytest.mark.parametrize("options", [dict(), dict(summation="inside"),
                                     dict(denominator="only_negatives")],
                         ids=["default", "inside", "only_negatives"])
def test_multilabel_empty_sets_give_no_nan(dtype, temperature, options):
    # Rows 0 and 1 are empty (they share nothing, not even with each other); with one view
    # they have no positive at all and contribute exactly 0.
    label_sets = _label_sets(8, 5, seed=3, empty_rows=(0, 1))
    for views in (1, 2):
        features = _unit_features(8, views, 8, seed=views)
        x = tf.cast(tf.constant(features), dtype)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = losses.contrastive_loss(x, label_sets, temperature=temperature, **options)
            total = tf.reduce_sum(loss)
        grad = tape.gradient(total, x)
        assert loss.dtype == tf.float32
        assert np.all(np.isfinite(loss.numpy()))
        assert np.all(np.isfinite(tf.cast(grad, tf.float32).numpy()))
        if views == 1:
            np.testing.assert_array_equal(loss.numpy()[:2], 0.0)
        want = ref.supcon(tf.cast(x, tf.float32).numpy(), label_sets,
                          temperature=temperature, **options)
        np.testing.assert_allclose(loss, want, rtol=1e-4, atol=1e-5)
    everything_empty = np.zeros((8, 5))
    np.testing.assert_array_equal(losses.contrastive_loss(
        features[:, :1], everything_empty, temperature=temperature), 0.0)


# ------------------------------------------------------------------------------------------
# Bad input: one clear line naming the fix.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,message", [
    (dict(features=np.zeros((4, 8), "float32")), r"\[batch, num_views, dim\].*views axis"),
    (dict(labels=np.zeros(5, int)), r"labels have batch size 5 but features have 4"),
    (dict(labels=np.zeros((4, 2, 1), int)), r"labels must be \[batch\]"),
    (dict(labels=np.array([[1, 2], [0, 1], [1, 0], [0, 1]])), r"row 0 is \[1, 2\]"),
    (dict(labels=np.array([[0.5, 0.5], [0, 1], [1, 0], [0, 1]])), r"multi-hot label sets"),
    (dict(labels=np.array([[1, 0], [-1, 1], [1, 0], [0, 1]])), r"map ignore targets"),
    (dict(contrast_mode="two_views"), r"Unknown contrast_mode 'two_views'; use one of"),
    (dict(summation="middle"), r"Unknown summation 'middle'"),
    (dict(denominator="some"), r"Unknown denominator 'some'"),
    (dict(temperature=0.0), r"temperature must be > 0, got 0.0"),
    (dict(temperature=-1.0), r"temperature must be > 0"),
    (dict(positives_cap=-2), r"positives_cap must be an int >= -1"),
    (dict(features=np.zeros((4, 1, 8), "float32"), labels=None), r"one view and labels are None"),
])
def test_bad_input_raises_one_clear_line(kwargs, message):
    call = dict(features=_unit_features(4, 2, 8), labels=np.array([0, 1, 0, 1]))
    call.update(kwargs)
    features, labels = call.pop("features"), call.pop("labels")
    with pytest.raises(ValueError, match=message) as info:
        losses.contrastive_loss(features, labels, **call)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------
# Baselines against their references.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("label_smoothing", [0.0, 0.05, 0.3])
@pytest.mark.parametrize("one_hot", [False, True])
def test_cross_entropy_matches_reference(label_smoothing, one_hot):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 4)).astype("float32") * 3
    labels = rng.integers(0, 4, size=6)
    given = np.eye(4)[labels] if one_hot else labels
    np.testing.assert_allclose(
        losses.cross_entropy_loss(given, logits, label_smoothing),
        ref.cross_entropy(labels, logits, label_smoothing), rtol=1e-5)


@pytest.mark.parametrize("with_labels", [True, False])
def test_n_pairs_matches_reference(with_labels):
    rng = np.random.default_rng(2)
    features = rng.normal(size=(6, 2, 5)).astype("float32")  # Unnormalised inner products.
    labels = np.array([0, 1, 2, 0, 3, 4]) if with_labels else None
    np.testing.assert_allclose(
        losses.n_pairs_loss(features, labels, 0.002), ref.n_pairs(features, labels, 0.002),
        rtol=1e-5)


def test_n_pairs_equals_supcon_with_one_positive_at_unit_temperature():
    # Sohn's loss without the penalty is SupCon's one-view anchor whose contrast set is the
    # positives f_j+ only: log(1 + sum_j exp(f.f_j+ - f.f_i+)) = -log softmax of the positive.
    features = _unit_features(5, 2, 4)
    logits = features[:, 0] @ features[:, 1].T
    want = -np.log(np.exp(np.diag(logits)) / np.exp(logits).sum(1))
    np.testing.assert_allclose(losses.n_pairs_loss(features, None, 0.0), want, rtol=1e-5)


@pytest.mark.parametrize("mining", ["semi_hard", "batch_hard"])
@pytest.mark.parametrize("views,with_labels", [(2, False), (2, True), (1, True), (3, True)])
def test_triplet_matches_reference(mining, views, with_labels):
    features = _unit_features(9, views, 4, seed=views)
    labels = _labels(9, 3) if with_labels else None
    np.testing.assert_allclose(
        losses.triplet_loss(features, labels, 0.2, mining),
        ref.triplet(features, labels, 0.2, mining), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("margin", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("with_labels", [True, False])
def test_max_margin_matches_reference(margin, with_labels):
    features = _unit_features(7, 2, 4)
    labels = _labels(7, 3) if with_labels else None
    np.testing.assert_allclose(
        losses.max_margin_contrastive_loss(features, labels, margin),
        ref.max_margin(features, labels, margin), rtol=1e-5, atol=1e-7)


def test_baselines_have_finite_gradients_for_identical_embeddings():
    features = tf.constant(np.tile(_unit_features(1, 1, 4), (6, 2, 1)))
    labels = np.array([0, 1, 0, 1, 2, 2])
    for fn in (lambda x: losses.triplet_loss(x, labels),
               lambda x: losses.triplet_loss(x, labels, mining="batch_hard"),
               lambda x: losses.max_margin_contrastive_loss(x, labels),
               lambda x: losses.n_pairs_loss(x, labels)):
        grad = _gradient(lambda x: tf.reduce_sum(fn(x)), features.numpy())
        assert np.all(np.isfinite(grad))


# ------------------------------------------------------------------------------------------
# Keras Loss wrappers.
# ------------------------------------------------------------------------------------------

WRAPPERS = [
    (losses.SupConLoss(temperature=0.2, denominator="one_positive", positives_cap=4),
     lambda f, y: losses.contrastive_loss(
         f, y, temperature=0.2, denominator="one_positive", positives_cap=4)),
    (losses.SimCLRLoss(temperature=0.3), lambda f, y: losses.nt_xent_loss(f, 0.3)),
    (losses.NPairsLoss(l2_penalty=0.01), lambda f, y: losses.n_pairs_loss(f, y, 0.01)),
    (losses.TripletLoss(margin=0.3, mining="batch_hard"),
     lambda f, y: losses.triplet_loss(f, y, 0.3, "batch_hard")),
    (losses.MaxMarginContrastiveLoss(margin=0.7),
     lambda f, y: losses.max_margin_contrastive_loss(f, y, 0.7)),
]


@pytest.mark.parametrize("loss,fn", WRAPPERS, ids=lambda x: getattr(x, "name", ""))
def test_wrapper_is_the_batch_mean_and_round_trips(loss, fn):
    features = _unit_features(6, 2, 4)
    labels = np.array([0, 1, 0, 2, 1, 2])
    np.testing.assert_allclose(loss(labels, features), np.mean(fn(features, labels)), rtol=1e-5)
    config = loss.get_config()
    clone = type(loss).from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(revived) is type(loss) and revived.get_config() == config
    np.testing.assert_allclose(revived(labels, features), loss(labels, features), rtol=1e-6)


def test_wrappers_accept_missing_labels():
    features = _unit_features(6, 2, 4)
    np.testing.assert_allclose(
        losses.SupConLoss()(None, features),
        np.mean(losses.contrastive_loss(features, None)), rtol=1e-6)


def test_cross_entropy_wrapper_round_trips():
    loss = losses.CrossEntropyLoss(label_smoothing=0.1)
    logits = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    labels = np.array([0, 2, 1, 1, 0])
    np.testing.assert_allclose(
        loss(labels, logits), np.mean(ref.cross_entropy(labels, logits, 0.1)), rtol=1e-5)
    assert losses.CrossEntropyLoss.from_config(loss.get_config()).get_config() == \
        loss.get_config()


def test_loss_inside_a_saved_keras_model_reloads_with_its_options(tmp_path):
    inputs = keras.Input((2, 4))
    model = keras.Model(inputs, keras.layers.UnitNormalization(axis=-1)(
        keras.layers.Dense(4)(inputs)))
    model.compile(optimizer="sgd", loss=losses.SupConLoss(temperature=0.3, summation="inside"))
    path = tmp_path / "model.keras"
    model.save(path)
    revived = keras.models.load_model(path)
    assert revived.loss.get_config() == model.loss.get_config()


# ------------------------------------------------------------------------------------------
# Distribution: MirroredStrategy over two logical CPUs equals one device.
# ------------------------------------------------------------------------------------------

DISTRIBUTED_LOSSES = {
    "supcon": lambda f, y: losses.contrastive_loss(f, y),
    "supcon_capped_inside": lambda f, y: losses.contrastive_loss(
        f, y, summation="inside", positives_cap=2, denominator="one_positive"),
    "supcon_one_view": lambda f, y: losses.contrastive_loss(f, y, contrast_mode="one_view"),
    "simclr": lambda f, y: losses.nt_xent_loss(f),
    "simclr_labels_none": lambda f, y: losses.contrastive_loss(f, None),
    "n_pairs": lambda f, y: losses.n_pairs_loss(f, y),
    "n_pairs_labels_none": lambda f, y: losses.n_pairs_loss(f, None),
    "triplet_semi_hard": lambda f, y: losses.triplet_loss(f, y),
    "triplet_batch_hard": lambda f, y: losses.triplet_loss(f, y, mining="batch_hard"),
    "max_margin": lambda f, y: losses.max_margin_contrastive_loss(f, y),
    "supcon_memory": lambda f, y: losses.contrastive_loss(
        f, y, memory_features=_unit_features(5, 1, 6, seed=11)[:, 0],
        memory_labels=np.array([0, 2, -1, 1, 0])),
    "supcon_memory_masked": lambda f, y: losses.contrastive_loss(
        f, y, summation="inside", memory_features=_unit_features(5, 1, 6, seed=11)[:, 0],
        memory_labels=np.array([0, 2, -1, 1, 0])),
}


def _losses_and_gradients(fn, features, labels):
    with tf.GradientTape() as tape:
        tape.watch(features)
        loss = fn(features, labels)
        total = tf.reduce_sum(loss)
    return loss, tape.gradient(total, features)


@pytest.fixture
def two_replicas(two_cpu_strategy):
    return two_cpu_strategy


def _two_replica_losses_and_gradients(strategy, fn, features, labels):
    """Per-sample losses and feature gradients of `fn` with the batch split over 2 replicas."""
    half = features.shape[0] // 2

    def shard(context):
        start = context.replica_id_in_sync_group * half
        return features[start:start + half], labels[start:start + half]

    sharded = strategy.experimental_distribute_values_from_function(shard)

    @tf.function
    def step(shards):
        return strategy.run(lambda xy: _losses_and_gradients(fn, *xy), args=(shards,))

    loss, grad = step(sharded)
    return (tf.concat(strategy.experimental_local_results(loss), 0),
            tf.concat(strategy.experimental_local_results(grad), 0))


@pytest.mark.parametrize("name", sorted(DISTRIBUTED_LOSSES))
def test_two_replicas_equal_one_device(two_replicas, name):
    fn = DISTRIBUTED_LOSSES[name]
    batch = 8
    features = tf.constant(_unit_features(batch, 2, 6))
    labels = tf.constant(np.array([0, 1, 2, 0, 1, 0, 2, 1]))
    half = batch // 2

    single_loss, single_grad = _losses_and_gradients(fn, features, labels)
    loss, grad = _two_replica_losses_and_gradients(two_replicas, fn, features, labels)
    np.testing.assert_allclose(loss, single_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, single_grad, rtol=1e-5, atol=1e-5)

    # Two independent half batches differ: the gather is really there.
    halves = [_losses_and_gradients(fn, features[s:s + half], labels[s:s + half])
              for s in (0, half)]
    independent = tf.concat([h[0] for h in halves], 0)
    assert not np.allclose(independent, single_loss, rtol=1e-3)


MULTILABEL_MEMORY = dict(
    memory_features=_unit_features(5, 1, 6, seed=11)[:, 0],
    memory_labels=np.array([[1, 0, 1], [0, 1, 0], [-1, -1, -1], [0, 0, 0], [1, 1, 0]]))
DISTRIBUTED_MULTILABEL_OPTIONS = {
    "default": {},
    "capped_inside": dict(summation="inside", positives_cap=2, denominator="one_positive"),
    "memory": MULTILABEL_MEMORY,
    "memory_masked": dict(summation="inside", **MULTILABEL_MEMORY),
}


@pytest.mark.parametrize("name", sorted(DISTRIBUTED_MULTILABEL_OPTIONS))
def test_multilabel_two_replicas_equal_one_device(two_replicas, name):
    options = DISTRIBUTED_MULTILABEL_OPTIONS[name]

    def fn(features, label_sets):
        return losses.contrastive_loss(features, label_sets, **options)

    features = tf.constant(_unit_features(8, 2, 6))
    label_sets = tf.constant(_label_sets(8, 3, seed=5, empty_rows=(2,)), tf.float32)
    single_loss, single_grad = _losses_and_gradients(fn, features, label_sets)
    loss, grad = _two_replica_losses_and_gradients(two_replicas, fn, features, label_sets)
    np.testing.assert_allclose(loss, single_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, single_grad, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(single_loss, ref.supcon(
        features.numpy(), label_sets.numpy(), **options), rtol=2e-5, atol=2e-6)


def test_one_hot_label_sets_equal_int_labels_on_two_replicas(two_replicas):
    features = tf.constant(_unit_features(8, 2, 6))
    labels = np.array([0, 1, 2, 0, 1, 0, 2, 1])
    for name in ("supcon", "supcon_capped_inside"):
        fn = DISTRIBUTED_LOSSES[name]
        int_loss, int_grad = _two_replica_losses_and_gradients(
            two_replicas, fn, features, tf.constant(labels))
        set_loss, set_grad = _two_replica_losses_and_gradients(
            two_replicas, fn, features, tf.constant(np.eye(3, dtype="float32")[labels]))
        np.testing.assert_allclose(set_loss, int_loss, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(set_grad, int_grad, rtol=1e-5, atol=1e-6)


def test_supcon_keras_loss_under_two_replicas_gives_the_global_mean_gradient(two_replicas):
    # The Keras wrapper divides by the replica count (scale_loss_for_distribution); summed over
    # replicas the gradients are those of the global batch mean.
    features = tf.constant(_unit_features(8, 2, 6))
    labels = tf.constant(np.array([0, 1, 2, 0, 1, 0, 2, 1]))
    loss_fn = losses.SupConLoss()

    with tf.GradientTape() as tape:
        tape.watch(features)
        single = loss_fn(labels, features)
    single_grad = tape.gradient(single, features)

    sharded = two_replicas.experimental_distribute_values_from_function(
        lambda c: (features[c.replica_id_in_sync_group * 4:][:4],
                   labels[c.replica_id_in_sync_group * 4:][:4]))

    @tf.function
    def step(shards):
        def replica_fn(xy):
            with tf.GradientTape() as tape:
                tape.watch(xy[0])
                value = loss_fn(xy[1], xy[0])
            return value, tape.gradient(value, xy[0])
        return two_replicas.run(replica_fn, args=(shards,))

    value, grad = step(sharded)
    total = sum(float(v) for v in two_replicas.experimental_local_results(value))
    np.testing.assert_allclose(total, float(single), rtol=1e-5)
    grad = tf.concat(two_replicas.experimental_local_results(grad), 0)
    np.testing.assert_allclose(grad, single_grad, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------
# The same math under the JAX backend.
# ------------------------------------------------------------------------------------------

_JAX_SCRIPT = r"""
import itertools, sys
import numpy as np
import keras
assert keras.backend.backend() == "jax", keras.backend.backend()
import jax
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import loss_reference as ref
from supcon_tf import losses
rng = np.random.default_rng(0)
z = rng.normal(size=(7, 3, 5)); z /= np.linalg.norm(z, axis=-1, keepdims=True)
z = z.astype("float32"); y = rng.integers(0, 3, size=7)
for s, d, cap, mode in itertools.product(("outside", "inside"),
        ("all", "one_positive", "only_negatives"), (-1, 3), ("all_views", "one_view")):
    opts = dict(temperature=0.2, summation=s, denominator=d, positives_cap=cap,
                contrast_mode=mode)
    np.testing.assert_allclose(losses.contrastive_loss(z, y, **opts),
                               ref.supcon(z, y, **opts), rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(losses.contrastive_loss(z, None, **opts),
                               ref.supcon(z, None, **opts), rtol=2e-5, atol=2e-6)
sets = (rng.random((7, 4)) < 0.4).astype("float32"); sets[0] = 0
for opts in ({}, dict(summation="inside", denominator="one_positive", positives_cap=3)):
    np.testing.assert_allclose(losses.contrastive_loss(z, sets, temperature=0.2, **opts),
                               ref.supcon(z, sets, temperature=0.2, **opts),
                               rtol=2e-5, atol=2e-6)
np.testing.assert_allclose(losses.triplet_loss(z, y), ref.triplet(z, y, 0.2, "semi_hard"),
                           rtol=1e-4, atol=1e-6)
np.testing.assert_allclose(losses.n_pairs_loss(z[:, :2], y), ref.n_pairs(z[:, :2], y, 0.002),
                           rtol=1e-5)
np.testing.assert_allclose(losses.max_margin_contrastive_loss(z, y), ref.max_margin(z, y, 1.0),
                           rtol=1e-5)
# Gradient of the hand-written log-sum-exp under jax.grad, jitted, against finite differences.
f = lambda x: jax.numpy.sum(losses.contrastive_loss(x, y) * np.arange(1, 8))
g = jax.jit(jax.grad(f))(z)
eps = 1e-3; num = np.zeros_like(z)
for idx in np.ndindex(z.shape):
    p, m = z.copy(), z.copy(); p[idx] += eps; m[idx] -= eps
    num[idx] = (np.sum(ref.supcon(p, y) * np.arange(1, 8))
                - np.sum(ref.supcon(m, y) * np.arange(1, 8))) / (2 * eps)
np.testing.assert_allclose(g, num, rtol=2e-3, atol=2e-4)
print("jax backend ok")
"""


def test_losses_run_under_the_jax_backend(tmp_path):
    script = tmp_path / "jax_losses.py"
    script.write_text(_JAX_SCRIPT)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, str(script), str(root), str(root / "tests")],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "jax backend ok" in result.stdout
