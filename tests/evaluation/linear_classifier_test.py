"""Tests of supcon_tf.evaluation.linear_classifier: the stage-2 linear classifier.

The trained classifier is checked against baselines computed in the test (the nearest-centre
rule on Gaussian clusters), its logits against `model.predict`, and the frozen encoder against
its weights before training.
"""

import numpy as np
import pytest

from supcon_tf.evaluation import linear_classifier


def test_sgd_linear_probe_learns_a_separable_problem():
    rng = np.random.default_rng(0)
    centers = 4.0 * np.eye(3, 5)
    train_y = rng.integers(0, 3, 120)
    test_y = rng.integers(0, 3, 60)
    train_x = centers[train_y] + rng.normal(size=(120, 5))
    test_x = centers[test_y] + rng.normal(size=(60, 5))
    result = linear_classifier.sgd_linear_probe(
        train_x, train_y, test_x, test_y, epochs=10, batch_size=32, learning_rate=0.1,
        optimizer="nesterov", schedule="cosine")
    # Baseline: the nearest-centre rule with the true centres, the best a linear rule can do
    # here (equal isotropic Gaussians), computed in numpy.
    distances = np.linalg.norm(test_x[:, None, :] - centers[None], axis=2)
    nearest_centre = np.mean(np.argmin(distances, axis=1) == test_y)
    assert result.top1 >= nearest_centre - 2 / len(test_y)  # within two test samples of it
    assert result.top5 == 1.0  # top-min(5, 3)
    logits = result.model.predict(test_x.astype(np.float32), verbose=0)
    assert result.top1 == pytest.approx(np.mean(np.argmax(logits, 1) == test_y))


def test_sgd_linear_probe_bad_arguments():
    features = np.zeros((4, 2))
    labels = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="epochs must be a positive int; received 0"):
        linear_classifier.sgd_linear_probe(features, labels, features, labels, epochs=0)
    with pytest.raises(ValueError, match="Unknown optimizer 'adagrad'"):
        linear_classifier.sgd_linear_probe(features, labels, features, labels, optimizer="adagrad")


def test_frozen_encoder_is_left_unchanged():
    """Stage 2 changes neither the encoder's weights nor its batch-norm statistics, even with
    weight decay, and trains only the Dense kernel and bias."""
    import keras
    import tensorflow as tf

    from supcon_tf.data import pipeline
    from supcon_tf.evaluation import linear_classifier
    from supcon_tf.models import resnet

    keras.utils.set_random_seed(0)
    encoder = resnet.resnet(18, (8, 8, 3), width_multiplier=0.125, stem="cifar")
    before = [np.array(w) for w in encoder.weights]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 8, 8, 3)).astype(np.uint8)
    labels = rng.integers(0, 3, 40)
    config = linear_classifier.ClassifierConfig(augmentation="crop_flip", epochs=2, batch_size=16,
                                         learning_rate=1.0, weight_decay=0.1,
                                         normalize_features=True)
    policy, options = config.augmenter_policy()
    train = pipeline.make_dataset((images, labels), policy, 1, 16, 8, seed=0,
                                  augment_options=options).map(lambda v, y: (v[:, 0], y))
    test = tf.data.Dataset.from_tensor_slices((images.astype(np.float32) / 255, labels)).batch(16)
    result = linear_classifier.train_linear_classifier(encoder, train, test, config, num_classes=3,
                                                num_train_examples=40, input_shape=(8, 8, 3))
    for old, new in zip(before, encoder.weights):
        np.testing.assert_array_equal(old, np.array(new))
    assert [v.shape for v in result.model.trainable_variables] == [(encoder.output_shape[-1], 3),
                                                                   (3,)]
    assert 0.0 <= result.top1 <= result.top5 <= 1.0
