"""Tests of supcon_tf.evaluation.features: the one path from images to frozen features.

Expected features are recomputed here: images resized and centre-cropped with TensorFlow
(`helpers.resize_centre_crop`) and passed through the encoder's own call in inference mode.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from supcon_tf.evaluation import features
from helpers import resize_centre_crop

SIZE = 8


@pytest.fixture(scope="module")
def encoder():
    """Conv -> batch norm (moving statistics far from a batch's) -> pooled features [B, 4]."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(4, 3),
                              keras.layers.BatchNormalization(),
                              keras.layers.GlobalAveragePooling2D()])
    norm = model.layers[1]
    norm.moving_mean.assign(np.full(4, 0.3, np.float32))
    norm.moving_variance.assign(np.full(4, 4.0, np.float32))
    return model


def _images(count, height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3)).astype(np.uint8)


def test_embed_function_is_the_encoder_in_inference_mode(encoder):
    images = _images(6, SIZE, SIZE).astype(np.float32) / 255.0
    embed = features.embed_function(encoder)
    got = embed(tf.constant(images)).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, encoder(images, training=False).numpy(), rtol=1e-6,
                               atol=1e-6)
    # Training mode (batch statistics) gives other features: inference mode is what is checked.
    assert not np.allclose(got, encoder(images, training=True).numpy(), atol=1e-3)
    assert features.embed_function(encoder) is embed  # traced once per encoder


def test_embed_function_takes_a_model_with_an_encoder_and_plain_callables(encoder):
    class Wrapper:  # a SupConModel's relevant part: an `.encoder`
        pass

    wrapper = Wrapper()
    wrapper.encoder = encoder
    assert features.embed_function(wrapper) is features.embed_function(encoder)

    def embed(images):  # e.g. export.load_embed's SavedModel signature
        return images[:, 0, 0, :]

    assert features.embed_function(embed) is embed


@pytest.mark.parametrize("crop_fraction", [1.0, 224 / 256])
def test_extract_features_matches_resize_crop_and_encoder(encoder, crop_fraction):
    images = _images(7, 12, 10, seed=1)  # not square: the short side is resized
    labels = np.array([3, 1, 4, 1, 5, 9, 2])
    data = tf.data.Dataset.from_tensor_slices((images, labels))
    got, targets = features.extract_features(encoder, data, SIZE, 3, crop_fraction)
    expected = encoder(np.stack([resize_centre_crop(image, SIZE, crop_fraction)
                                 for image in images]), training=False).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(targets, labels)  # input order, every example
    assert got.dtype == np.float32 and targets.dtype == np.int64


def test_embed_batches_stacks_outputs_and_refuses_an_empty_split():
    batches = tf.data.Dataset.from_tensor_slices(
        (np.arange(10, dtype=np.float32).reshape(5, 2), np.arange(5))).batch(2)
    outputs, targets = features.embed_batches(lambda x: 2 * x, batches)
    np.testing.assert_array_equal(outputs, 2 * np.arange(10).reshape(5, 2))
    np.testing.assert_array_equal(targets, np.arange(5))
    with pytest.raises(ValueError, match="the split is empty"):
        features.embed_batches(lambda x: x, batches.take(0))


def test_embed_images_takes_uint8_or_float_in_any_batch(encoder):
    images = _images(5, SIZE, SIZE, seed=2)
    floats = images.astype(np.float32) / 255.0
    expected = encoder(floats, training=False).numpy()
    np.testing.assert_allclose(features.embed_images(encoder, images, batch_size=2), expected,
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(features.embed_images(encoder, floats, batch_size=5), expected,
                               rtol=1e-6, atol=1e-6)


def test_l2_normalize_gives_unit_rows_and_keeps_zero_rows():
    rows = features.l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(rows, [[0.6, 0.8], [0.0, 0.0]])


@pytest.mark.parametrize("call, match", [
    (lambda: features.check_features(np.zeros(3), "train_x"),
     r"train_x must be float \[num_samples > 0, dim\]; received shape \(3,\)"),
    (lambda: features.check_features(np.full((2, 2), np.nan), "test_x"), "test_x holds NaN"),
    (lambda: features.check_class_ids(np.zeros(3, int), 2, "train_y"),
     r"train_y must be int \[num_samples=2\]"),
    (lambda: features.check_class_ids(np.array([0.5, 1.0]), 2, "train_y"),
     "train_y must hold class ids >= 0"),
    (lambda: features.check_multilabel(np.array([[1, 2]]), 1, "val_y"),
     "val_y must hold only 1, 0 or -1; received 2"),
    (lambda: features.check_positive_int("k", 0, "Pass e.g. k=20."),
     "k must be a positive int; received 0. Pass e.g. k=20."),
    (lambda: features.check_same_dim(np.zeros((2, 3)), np.zeros((2, 4)), "train_x", "test_x"),
     "test_x must have train_x's dim 3; received 4"),
])
def test_input_checks_name_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()
