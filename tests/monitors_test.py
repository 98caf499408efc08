"""Tests for supcon_tf.monitors: kNN accuracy callback and the collapse warning."""

import warnings

import keras
import numpy as np
import pytest

from supcon_tf import losses
from supcon_tf import monitors
from supcon_tf.evaluation import knn
from supcon_tf.models.supcon_model import SupConModel

IMAGE = (4, 4, 3)


def _data(batch=16, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(size=(batch, 2) + IMAGE).astype("float32"),
            rng.integers(0, 3, size=batch))


def _model(constant=False):
    keras.utils.set_random_seed(0)
    dense = keras.layers.Dense(
        8, kernel_initializer="zeros" if constant else "glorot_uniform", trainable=not constant)
    encoder = keras.Sequential([keras.Input(IMAGE), keras.layers.Flatten(), dense])
    model = SupConModel(encoder, projection_units=[4], probe=False, temperature=0.2)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    return model


def test_knn_accuracy_logs_the_probe_on_predicted_embeddings():
    x, y = _data()
    test_x, test_y = _data(seed=1)
    callback = monitors.KNNAccuracy(x[:, 0], y, test_x[:, 0], test_y, k=3)
    model = _model()
    history = model.fit(x, y, batch_size=8, epochs=2, callbacks=[callback], verbose=0)
    want = knn.knn_accuracy(model.predict(x[:, 0], verbose=0), y,
                            model.predict(test_x[:, 0], verbose=0), test_y, k=3)
    assert history.history["knn_accuracy"][-1] == pytest.approx(want)
    assert [epoch for epoch, _ in callback.history] == [1, 2]


def test_collapse_monitor_warns_for_a_constant_encoder():
    x, y = _data()
    model = _model(constant=True)  # Every image -> the same features -> one embedding.
    monitor = monitors.CollapseMonitor(8, 2, probe_images=x[:, 0])
    with pytest.warns(RuntimeWarning, match=r"training looks collapsed.*collapse value"):
        history = model.fit(x, y, batch_size=8, epochs=1, callbacks=[monitor], verbose=0)
    assert history.history["contrastive_loss"][-1] == pytest.approx(
        losses.collapse_value(8, 2, 0.2), rel=1e-4)
    assert history.history["embedding_spread"][-1] < 1e-3
    assert monitor.collapsed_epochs == [1]


def test_collapse_monitor_is_quiet_for_a_healthy_model():
    x, y = _data()
    monitor = monitors.CollapseMonitor(8, 2, probe_images=x[:, 0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = _model().fit(x, y, batch_size=8, epochs=1, callbacks=[monitor], verbose=0)
    assert not [w for w in caught if "collapsed" in str(w.message)]
    assert history.history["embedding_spread"][-1] > 0.1
    assert monitor.collapsed_epochs == []


def test_knn_frequency_must_be_positive():
    x, y = _data()
    with pytest.raises(ValueError, match="frequency must be >= 1"):
        monitors.KNNAccuracy(x[:, 0], y, x[:, 0], y, frequency=0)
