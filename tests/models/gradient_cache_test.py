"""Tests for gradient caching (`SupConModel(..., gradient_chunks=k)`): the chunked step against
the unchunked one, batch norm against unsynchronised replicas and a hand-computed moving
average, and the chunk bookkeeping against plain numpy slicing."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from supcon_tf.models import gradient_cache
from supcon_tf.models.supcon_model import SupConModel

IMAGE = (6, 6, 3)


def _conv_encoder(seed=0, batch_norm=False, dropout=0.0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input(IMAGE), keras.layers.Conv2D(4, 3)]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(momentum=0.8))
    layers += [keras.layers.Activation("relu"), keras.layers.GlobalAveragePooling2D()]
    if dropout:
        layers.append(keras.layers.Dropout(dropout, seed=seed))
    layers.append(keras.layers.Dense(6))
    return keras.Sequential(layers, name="encoder")


def _data(batch=8, views=2, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(size=(batch, views) + IMAGE).astype("float32"),
            rng.integers(0, 3, size=batch))


def _train(chunks, x, y, strategy=None, batch_size=8, epochs=2, batch_norm=False, **kwargs):
    """The model after `epochs` over (x, y) from the same start, `gradient_chunks=chunks`."""
    scope = strategy.scope() if strategy is not None else _no_scope()
    with scope:
        model = SupConModel(_conv_encoder(batch_norm=batch_norm), projection_units=[5, 4],
                            gradient_chunks=chunks, **kwargs)
        model.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9))
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return model, history.history


class _no_scope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("chunks", [2, 3, 8])
def test_chunked_step_equals_the_unchunked_step_with_head_and_probe(chunks):
    x, y = _data()
    reference, reference_logs = _train(1, x, y, num_classes=3)
    model, logs = _train(chunks, x, y, num_classes=3)
    assert len(model.weights) == len(reference.weights)
    for got, want in zip(model.weights, reference.weights):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5,
                                   err_msg=got.path)
    for key in ("loss", "contrastive_loss", "probe_loss", "probe_accuracy"):
        np.testing.assert_allclose(logs[key], reference_logs[key], rtol=1e-5)


def test_chunked_step_with_sample_weights_and_a_short_last_batch():
    # 11 samples in batches of 8: the last batch has 3 samples, fewer than the 4 chunks (one
    # chunk is empty in that step) and a dynamic batch dimension in the traced step.
    x, y = _data(batch=11)
    weights = np.linspace(0.0, 2.0, 11).astype("float32")
    models = []
    for chunks in (1, 4):
        model = SupConModel(_conv_encoder(), projection_units=[5, 4], gradient_chunks=chunks,
                            loss="joint", num_classes=3)
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        model.fit(x, y, sample_weight=weights, batch_size=8, epochs=1, shuffle=False, verbose=0)
        models.append(model)
    for got, want in zip(models[1].weights, models[0].weights):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


def test_chunked_step_with_the_memory_queue_equals_the_unchunked_step():
    x, y = _data()
    reference, _ = _train(1, x, y, memory_size=32, memory_momentum=0.9, probe=False)
    model, _ = _train(2, x, y, memory_size=32, memory_momentum=0.9, probe=False)
    for got, want in zip(model.weights, reference.weights):  # queue and key encoder included
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5,
                                   err_msg=got.path)


def test_chunked_step_on_two_replicas_equals_one_device(two_cpu_strategy):
    # Each replica chunks its 4 samples in 2; the loss gathers the 8 samples of both.
    x, y = _data()
    reference, _ = _train(1, x, y, num_classes=3)
    model, _ = _train(2, x, y, strategy=two_cpu_strategy, num_classes=3)
    for got, want in zip(model.weights, reference.weights):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5,
                                   err_msg=got.path)


def test_batch_norm_chunks_normalise_like_unsynchronised_replicas(two_cpu_strategy):
    # Trainable weights: k=2 chunks on one device == 2 replicas, each normalising its half.
    x, y = _data()
    chunked, _ = _train(2, x, y, epochs=1, batch_norm=True, probe=False)
    replicas, _ = _train(1, x, y, epochs=1, strategy=two_cpu_strategy, probe=False,
                         batch_norm=True)
    for got, want in zip(chunked.trainable_weights, replicas.trainable_weights):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5,
                                   err_msg=got.path)
    unchunked, _ = _train(1, x, y, epochs=1, batch_norm=True,
                          probe=False)
    assert not np.allclose(unchunked.encoder.weights[0].numpy(),
                           chunked.encoder.weights[0].numpy(), atol=1e-6)


def test_batch_norm_moving_statistics_take_one_update_per_chunk():
    x, y = _data()
    encoder = _conv_encoder(batch_norm=True)
    conv, norm = encoder.layers[0], encoder.layers[1]
    # Before the step: the conv outputs of each chunk of samples (views together), by hand.
    pre = [conv(tf.reshape(tf.transpose(x[start:stop], (1, 0, 2, 3, 4)), (-1,) + IMAGE))
           .numpy() for start, stop in ((0, 2), (2, 5), (5, 8))]
    mean, variance = norm.moving_mean.numpy(), norm.moving_variance.numpy()
    for chunk in pre:  # momentum 0.8, in chunk order, each chunk once
        mean = 0.8 * mean + 0.2 * chunk.mean(axis=(0, 1, 2))
        variance = 0.8 * variance + 0.2 * chunk.var(axis=(0, 1, 2))
    model = SupConModel(encoder, projection_units=[4], gradient_chunks=3, probe=False)
    model.compile(optimizer=keras.optimizers.SGD(0.0))  # lr 0: the conv stays as it was
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(norm.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norm.moving_variance.numpy(), variance, rtol=1e-5, atol=1e-6)


def test_dropout_masks_repeat_in_the_re_encoding_pass():
    # With dropout the chunked step is exact for the masks drawn: a lr-0 step leaves the seed
    # state advanced once per chunk (not twice), so the second pass re-drew the first's masks.
    x, y = _data()
    model = SupConModel(_conv_encoder(dropout=0.5), projection_units=[4], gradient_chunks=2,
                        probe=False)
    seed = next(v for v in model.encoder.non_trainable_variables if "seed" in v.path)
    start = seed.numpy().copy()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    reference = keras.random.SeedGenerator(0)
    reference.state.assign(start)
    for _ in range(2):
        reference.next()
    np.testing.assert_array_equal(seed.numpy(), reference.state.numpy())


def test_chunk_bookkeeping_matches_numpy_slicing():
    assert gradient_cache.chunk_bounds(10, 4) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3 * 10, 5)).astype("float32")  # view-major, 3 views
    per_sample = features.reshape(3, 10, 5)
    chunks = [gradient_cache.chunk_rows(features, 3, a, b)
              for a, b in gradient_cache.chunk_bounds(10, 4)]
    for (a, b), chunk in zip(gradient_cache.chunk_bounds(10, 4), chunks):
        np.testing.assert_array_equal(chunk, per_sample[:, a:b].reshape(-1, 5))
    np.testing.assert_array_equal(gradient_cache.merge_chunks(chunks, 3), features)


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_bad_gradient_chunks_are_refused(value):
    with pytest.raises(ValueError, match="gradient_chunks must be an int >= 1"):
        SupConModel(_conv_encoder(), projection_units=[4], gradient_chunks=value)


def test_a_static_batch_smaller_than_the_chunks_is_refused():
    model = SupConModel(_conv_encoder(), projection_units=[4], gradient_chunks=4, probe=False)
    model.compile(optimizer="sgd")
    x, y = _data(batch=3)
    with pytest.raises(ValueError, match="needs at least that many samples per batch"):
        model.train_step((tf.constant(x), tf.constant(y)))


def test_gradient_chunks_round_trip_through_config_and_keras_file(tmp_path):
    model = SupConModel(_conv_encoder(), projection_units=[4], gradient_chunks=3)
    assert SupConModel.from_config(model.get_config()).gradient_chunks == 3
    path = str(tmp_path / "chunks.keras")
    model.save(path)
    assert keras.models.load_model(path).gradient_chunks == 3
