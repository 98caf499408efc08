"""Tests of supcon_tf.train_loop against Keras `fit`: same weights and logs on one device, and
under two replicas against one device (the multi-worker case runs in
tests/distribute_test.py with two processes)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from supcon_tf import train_loop
from supcon_tf.models.supcon_model import SupConModel

IMAGE = (4, 4, 3)
BATCH, STEPS = 8, 3


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    encoder = keras.Sequential([keras.Input(IMAGE), keras.layers.Flatten(),
                                keras.layers.Dense(8),
                                keras.layers.BatchNormalization(synchronized=True),
                                keras.layers.Activation("relu")], name="encoder")
    model = SupConModel(encoder, projection_units=[6, 4], num_classes=3, temperature=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    model.optimizer.build(model.trainable_variables)
    return model


def _data():
    rng = np.random.default_rng(0)
    return (rng.uniform(size=(BATCH * STEPS, 2) + IMAGE).astype("float32"),
            rng.integers(0, 3, size=BATCH * STEPS))


def _dataset(x, y):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)


def _reference():
    x, y = _data()
    model = _model()
    start = [w.numpy() for w in model.weights]
    history = model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    return start, model, history.history


def test_one_device_equals_fit():
    start, reference, reference_history = _reference()
    model = _model(1)
    for variable, value in zip(model.weights, start):
        variable.assign(value)
    history = train_loop.fit(model, tf.distribute.get_strategy(), _dataset(*_data()), epochs=2,
                             steps_per_epoch=STEPS, verbose=0)
    for a, b in zip(model.weights, reference.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6, err_msg=a.path)
    assert int(model.optimizer.iterations.numpy()) == 2 * STEPS
    assert set(history.history) == set(reference_history)
    for name, values in reference_history.items():
        np.testing.assert_allclose(history.history[name], values, rtol=1e-5, err_msg=name)


def test_one_step_function_for_every_call_is_traced_once():
    start, reference, _ = _reference()
    model = _model(1)
    for variable, value in zip(model.weights, start):
        variable.assign(value)
    strategy = tf.distribute.get_strategy()
    step = train_loop.make_step_function(model, strategy)
    for epoch in range(2):  # One call per epoch, as the pretraining binary makes them.
        train_loop.fit(model, strategy, _dataset(*_data()), initial_epoch=epoch, epochs=epoch + 1,
                       steps_per_epoch=STEPS, verbose=0, step_function=step)
    assert step.experimental_get_tracing_count() == 1
    for a, b in zip(model.weights, reference.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6, err_msg=a.path)


def test_two_replicas_equal_one_device(two_cpu_strategy):
    start, reference, reference_history = _reference()
    with two_cpu_strategy.scope():
        model = _model(2)
    for variable, value in zip(model.weights, start):
        variable.assign(value)
    history = train_loop.fit(model, two_cpu_strategy, None, epochs=2, steps_per_epoch=STEPS,
                             verbose=0, dataset_for_epoch=lambda epoch: _dataset(*_data()))
    for a, b in zip(model.weights, reference.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5, err_msg=a.path)
    # The logged metrics are those of the global batch, not of one replica's half.
    for name, values in reference_history.items():
        np.testing.assert_allclose(history.history[name], values, rtol=1e-5, err_msg=name)


def test_a_callback_stops_training_after_its_step():
    class StopAtTwo(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.events = []

        def on_train_batch_end(self, batch, logs=None):
            self.events.append(("batch", batch))
            if batch == 1:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            self.events.append(("epoch", epoch))

        def on_train_end(self, logs=None):
            self.events.append(("end", None))

    stop = StopAtTwo()
    model = _model()
    train_loop.fit(model, tf.distribute.get_strategy(), _dataset(*_data()), epochs=3,
                   steps_per_epoch=STEPS, callbacks=[stop], verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 2
    assert stop.events == [("batch", 0), ("batch", 1), ("epoch", 0), ("end", None)]


def test_weights_finite_is_exact_for_large_finite_and_any_non_finite_values():
    big = tf.Variable(tf.fill([1000], 3e38))  # a plain sum would overflow to inf
    assert bool(train_loop.weights_finite([big, tf.Variable([1, 2])]))
    for bad in (np.inf, -np.inf, np.nan):
        value = np.zeros(10, np.float32)
        value[3] = bad
        assert not bool(train_loop.weights_finite([big, tf.Variable(value)]))


def test_divergence_stops_at_the_first_non_finite_step_before_any_callback():
    """At a far-too-high learning rate the weights overflow before the loss does; the loop
    stops at the first step with a non-finite weight, and no callback sees that step."""
    x, y = _data()
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(1e30))
    model.optimizer.build(model.trainable_variables)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(all(np.isfinite(w).all() for w in self.model.get_weights()))

    # The same run, step by step with fit, gives the first step with a non-finite weight.
    reference = _model()
    reference.compile(optimizer=keras.optimizers.SGD(1e30))
    start = [w.numpy() for w in model.weights]
    for variable, value in zip(reference.weights, start):
        variable.assign(value)
    first_bad, losses = None, []
    for step in range(1, 31):
        losses.append(reference.train_on_batch(x[:BATCH], y[:BATCH])[0])
        if not all(np.isfinite(w).all() for w in reference.get_weights()):
            first_bad = step
            break
    assert first_bad is not None

    with pytest.raises(train_loop.NonFiniteError) as error:
        train_loop.fit(model, tf.distribute.get_strategy(), None, epochs=30,
                       steps_per_epoch=1, callbacks=[Record()], verbose=0,
                       dataset_for_epoch=lambda epoch: _dataset(x[:BATCH], y[:BATCH]))
    assert error.value.step == first_bad
    assert str(error.value).startswith("non-finite ") and f"at step {first_bad}" in \
        str(error.value)
    assert len(seen) == first_bad - 1 and all(seen)


def test_progress_shows_the_runs_epochs_when_fit_is_called_once_per_epoch(capsys):
    model = _model()
    strategy = tf.distribute.get_strategy()
    step = train_loop.make_step_function(model, strategy)
    for epoch in range(2):
        train_loop.fit(model, strategy, _dataset(*_data()), initial_epoch=epoch, epochs=epoch + 1,
                       steps_per_epoch=STEPS, verbose=2, step_function=step, total_epochs=5)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch")]
    assert lines == ["Epoch 1/5", "Epoch 2/5"]
