"""Tests of `supcon_tf.evaluation.finetune` (the fine-tuning half of the transfer protocol).

The encoder is the tiny digits pretraining run of helpers.tiny_run_dir (shared with the transfer
tests), restored with `trainer.load_pretrained`; expected values are recomputed here (numpy
losses, a direct loop over the grid, the protocol's formulas for batch-norm momentum and weight
decay), and accuracy is compared with the same classifier before fine-tuning.
"""

import math

import keras
import numpy as np
import pytest

from supcon_tf import optimizers
from supcon_tf.data import sources
from supcon_tf.evaluation import finetune
from supcon_tf.evaluation import metrics
from helpers import IMAGE_SIZE
from helpers import chance_accuracy
from helpers import tiny_run_dir



@pytest.fixture(scope="module")
def pretrained_encoder(tmp_path_factory):
    """(encoder, its pretrained weights); tests restore the weights before using it."""
    from supcon_tf import trainer

    encoder = trainer.load_pretrained(tiny_run_dir(tmp_path_factory)).model.encoder
    return encoder, encoder.get_weights()


@pytest.fixture
def encoder(pretrained_encoder):
    model, weights = pretrained_encoder
    model.set_weights(weights)
    return model


def _assert_weights_equal(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------------------
# pieces


def _naive_masked_bce(targets, logits):
    """Per sample: mean over classes c with target != IGNORE of -log sigmoid(+-logit)."""
    losses = np.zeros(targets.shape[0])
    for i in range(targets.shape[0]):
        terms = []
        for c in range(targets.shape[1]):
            if targets[i, c] == metrics.IGNORE:
                continue
            p = 1.0 / (1.0 + math.exp(-logits[i, c]))
            terms.append(-math.log(p) if targets[i, c] == 1 else -math.log(1.0 - p))
        losses[i] = np.mean(terms) if terms else 0.0
    return losses


def test_masked_sigmoid_cross_entropy_matches_naive_loops():
    rng = np.random.default_rng(0)
    targets = rng.choice([1, 0, metrics.IGNORE], size=(6, 5), p=[0.3, 0.5, 0.2])
    targets[0] = metrics.IGNORE  # a sample with every entry ignored has loss 0
    logits = rng.normal(scale=3.0, size=(6, 5)).astype(np.float32)
    got = np.asarray(finetune.masked_sigmoid_cross_entropy(targets, logits))
    np.testing.assert_allclose(got, _naive_masked_bce(targets, logits), rtol=1e-5, atol=1e-6)
    assert got[0] == 0.0


def test_make_grid_defaults_to_the_reference_grid_and_divides_decay_by_rate():
    grid = finetune.make_grid()  # reference/transfer.md: 7 learning rates x (0 + 7 decays)
    assert len(grid) == 7 * 8
    rates = sorted({rate for rate, _, _ in grid})
    decays = sorted({decay for _, decay, _ in grid})
    np.testing.assert_allclose(rates, np.logspace(-4, -1, 7))
    assert decays[0] == 0.0
    np.testing.assert_allclose(decays[1:], np.logspace(-6, -3, 7))
    for rate, decay, coefficient in grid:
        assert coefficient * rate == pytest.approx(decay)
    grid = finetune.make_grid([0.01, 0.1], [0.0, 1e-4])
    assert [(lr, wd) for lr, wd, _ in grid] == [(0.01, 0.0), (0.01, 1e-4), (0.1, 0.0),
                                                (0.1, 1e-4)]
    for lr, wd, coefficient in grid:
        assert coefficient == pytest.approx(wd / lr)
    with pytest.raises(ValueError, match="learning rates"):
        finetune.make_grid([0.0], [0.0])
    with pytest.raises(ValueError, match="weight decays"):
        finetune.make_grid([0.1], [-1.0])


def test_bn_momentum_is_max_of_one_minus_ten_over_steps_and_0_9():
    assert finetune.bn_momentum(50) == pytest.approx(0.9)   # 1 - 10/50 = 0.8 -> 0.9
    assert finetune.bn_momentum(200) == pytest.approx(0.95)  # 1 - 10/200
    with pytest.raises(ValueError, match="steps_per_epoch must be a positive int; received 0"):
        finetune.bn_momentum(0)


@pytest.mark.parametrize("scores, best", [([0.2, 0.5, 0.1], 1), ([0.5, 0.2, 0.5], 0),
                                          ([0.3], 0)])
def test_select_best_is_the_first_argmax(scores, best):
    assert finetune.select_best(scores) == best == int(np.argmax(scores))


def test_batch_norm_layers_are_found_in_nested_models():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                              keras.layers.BatchNormalization()])
    inputs = keras.Input((4,))
    outer = keras.Model(inputs, keras.layers.BatchNormalization()(inner(inputs)))
    assert finetune.set_batch_norm_momentum(outer, 0.95) == 2
    assert inner.layers[-1].momentum == 0.95 and outer.layers[-1].momentum == 0.95


# ----------------------------------------------------------------------------------------------
# fine-tuning runs


@pytest.mark.slow
def test_short_finetune_lowers_the_loss_and_sets_bn_momentum_and_decay(encoder):
    train = sources.load_source("digits", "train")  # 1,442 images
    test = sources.load_source("digits", "test")
    batch_size, steps, rate, decay = 12, 100, 0.1, 1e-4
    # Baseline: the same classifier before fine-tuning (pretrained encoder, the seeded head).
    untrained = finetune.build_classifier(encoder, 10, seed=0)
    before, _ = finetune.classifier_scores(untrained, test, IMAGE_SIZE, 128)
    result = finetune.finetune(encoder, train, num_classes=10, num_train_examples=1442,
                               learning_rate=rate, weight_decay=decay, steps=steps,
                               batch_size=batch_size, seed=0)
    # Batch norm: max(1 - 10 / s, 0.9) with s = ceil(1442 / 12) = 121 steps per epoch.
    expected_momentum = max(1.0 - 10.0 / math.ceil(1442 / batch_size), 0.9)
    assert expected_momentum == pytest.approx(1.0 - 10.0 / 121)
    norms = [layer for layer in encoder.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 20  # ResNet-18: stem + 16 block convs + 3 projection shortcuts
    assert all(layer.momentum == pytest.approx(expected_momentum) for layer in norms)
    assert result.bn_momentum == pytest.approx(expected_momentum)
    # Optimizer: SGD, Nesterov 0.9, coupled L2 of decay / rate, cosine from `rate` to 0.
    optimizer = result.optimizer
    assert isinstance(optimizer, optimizers.SGDWithL2) and result.model.optimizer is optimizer
    assert optimizer.nesterov and optimizer.momentum == pytest.approx(0.9)
    assert optimizer.l2_weight_decay == pytest.approx(decay / rate)
    schedule = result.schedule
    assert float(schedule(0)) == pytest.approx(rate)
    assert float(schedule(steps // 2)) == pytest.approx(rate / 2, rel=1e-3)
    assert float(schedule(steps)) == pytest.approx(0.0, abs=1e-7)
    assert int(optimizer.iterations) == steps
    assert result.model.get_layer("classifier").units == 10

    losses = result.step_losses
    assert losses.shape == (steps,) and np.all(np.isfinite(losses))
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.1
    scores, labels = finetune.classifier_scores(result.model, test, IMAGE_SIZE, 128)
    accuracy = float(np.mean(np.argmax(scores, axis=1) == labels))
    baseline = float(np.mean(np.argmax(before, axis=1) == labels))
    assert labels.shape == (355,)
    assert accuracy > baseline + 0.15 and accuracy > 2 * chance_accuracy(labels)


@pytest.mark.slow
def test_grid_search_picks_the_argmax_of_a_direct_loop(pretrained_encoder, encoder):
    _, pretrained = pretrained_encoder
    train = sources.load_source("digits", "train[:160]")
    val = sources.load_source("digits", "train[160:260]")
    grid = finetune.make_grid([1e-4, 0.3], [1e-4])
    options = dict(num_classes=10, num_train_examples=160, steps=6, batch_size=16, seed=0)
    points, best = finetune.grid_search(encoder, train, val, grid, metric="top1", **options)
    _assert_weights_equal(encoder.get_weights(), pretrained)  # restored afterwards

    direct = []
    for rate, decay, _ in grid:
        encoder.set_weights(pretrained)
        result = finetune.finetune(encoder, train, learning_rate=rate, weight_decay=decay,
                                   **options)
        scores, labels = finetune.classifier_scores(result.model, val, IMAGE_SIZE, 64)
        direct.append(float(np.mean(np.argmax(scores, axis=1) == labels)))
    assert [p.val_score for p in points] == pytest.approx(direct, abs=1e-9)
    assert [(p.learning_rate, p.weight_decay) for p in points] == [(1e-4, 1e-4), (0.3, 1e-4)]
    assert best == int(np.argmax(direct))


@pytest.mark.slow
def test_multilabel_finetune_trains_on_masked_sigmoid_cross_entropy(pretrained_encoder, encoder):
    """The first step's loss equals the masked sigmoid loss of the untrained model, recomputed."""
    import tensorflow as tf

    _, pretrained = pretrained_encoder
    images, labels, is_test = sources.digits_arrays()
    images, labels = images[~is_test][:64], labels[~is_test][:64]
    targets = np.eye(10, dtype=np.int64)[labels]
    targets[:, 9] = metrics.IGNORE  # class 9 ignored everywhere
    targets[::3, 0] = metrics.IGNORE
    data = tf.data.Dataset.from_tensor_slices((images, targets))
    result = finetune.finetune(encoder, data, num_classes=10, num_train_examples=64,
                               learning_rate=0.05, weight_decay=0.0, steps=3, batch_size=8,
                               multilabel=True, seed=0)
    assert np.all(np.isfinite(result.step_losses))

    encoder.set_weights(pretrained)  # the same start: pretrained encoder, same seeded head
    first_images, first_targets = next(iter(finetune.train_pipeline(data, IMAGE_SIZE, 8,
                                                                    seed=0)))
    untrained = finetune.build_classifier(encoder, 10, seed=0)
    logits = untrained(first_images, training=True).numpy()
    expected = np.mean(_naive_masked_bce(first_targets.numpy(), logits))
    assert result.step_losses[0] == pytest.approx(expected, rel=1e-4)
    unmasked = np.mean(_naive_masked_bce(np.maximum(first_targets.numpy(), 0), logits))
    assert abs(unmasked - expected) > 1e-3  # the mask matters for this batch
