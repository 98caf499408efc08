"""SupConModel under Keras' JAX backend (`supcon_tf.models.jax_step`), run by `make test-jax`.

Every expected value is computed without the code under test: the forward pass of the Dense
encoder and head is written out in `jax.numpy` (`_embed`), the SupCon loss is a few lines of
`jax.numpy` (`_supcon`, itself checked against the naive loops of `tests/loss_reference.py`), its
gradient is `jax.grad`'s, and SGD, LARS and the warm-up cosine schedule are their update
formulas in numpy. The ResNet's batch-norm statistics are checked against the moments of the
stem's output, and the memory queue against the momentum formula and hand-embedded keys.
"""

import math

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

import loss_reference
import supcon_tf
from supcon_tf import optimizers
from supcon_tf import schedules
from supcon_tf.models import batch_norm
from supcon_tf.models import resnet

pytestmark = pytest.mark.jax

BATCH, VIEWS, INPUT_DIM = 8, 2, 6
TEMPERATURE = 0.5
LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 0])


def _batch(seed=0):
    """Multi-view inputs float32 `[BATCH, VIEWS, INPUT_DIM]` and int labels `[BATCH]`."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(BATCH, VIEWS, INPUT_DIM)).astype("float32"), LABELS


def _dense_model(**kwargs):
    """A SupConModel on a Dense encoder (6 -> 5 relu -> 4, no batch norm), head [6, 3]."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((INPUT_DIM,))
    hidden = keras.layers.Dense(5, activation="relu", name="hidden")(inputs)
    features = keras.layers.Dense(4, name="features")(hidden)
    encoder = keras.Model(inputs, features, name="encoder")
    return supcon_tf.SupConModel(encoder, projection_units=(6, 3), temperature=TEMPERATURE,
                                 **kwargs)


def _params(encoder, head):
    """The Dense weights of `encoder` and `head` as numpy arrays, keyed "<layer>/<weight>"
    with layers numbered 0 (hidden), 1 (features), 2, 3 (head)."""
    layers = [encoder.get_layer("hidden"), encoder.get_layer("features"), *head.dense_layers]
    return {f"{index}/{name}": np.array(getattr(layer, name))
            for index, layer in enumerate(layers) for name in ("kernel", "bias")}


def _model_params(model):
    return _params(model.encoder, model.projection_head)


def _embed(params, views):
    """The encoder and projection head written out: `[B, V, 6]` -> unit-norm `[B, V, 3]`
    (each Dense acts on the last axis, so no view-major reshape is needed)."""
    hidden = jax.nn.relu(views @ params["0/kernel"] + params["0/bias"])
    features = hidden @ params["1/kernel"] + params["1/bias"]
    projected = jax.nn.relu(features @ params["2/kernel"] + params["2/bias"])
    embeddings = projected @ params["3/kernel"] + params["3/bias"]
    return embeddings / jnp.sqrt(jnp.sum(embeddings ** 2, axis=-1, keepdims=True))


def _supcon(embeddings, labels, temperature):
    """SupCon L_out (Eq. 2) per sample `[B]`: every view an anchor, the denominator over every
    other view in the batch, scaled by the temperature, averaged over the anchor's views."""
    batch, views, dim = embeddings.shape
    rows = embeddings.reshape(batch * views, dim)  # sample-major: row i * views + v
    ids = np.repeat(labels, views)
    logits = rows @ rows.T / temperature
    others = ~np.eye(batch * views, dtype=bool)
    positives = (ids[:, None] == ids[None, :]) & others
    log_prob = logits - jax.scipy.special.logsumexp(
        jnp.where(others, logits, -jnp.inf), axis=1, keepdims=True)
    anchor_loss = -jnp.sum(jnp.where(positives, log_prob, 0.0), axis=1) / positives.sum(axis=1)
    return temperature * anchor_loss.reshape(batch, views).mean(axis=1)


def _step_loss(params, views, labels, weights):
    """The step's objective: the sample-weighted batch mean of the SupCon loss."""
    return jnp.mean(weights * _supcon(_embed(params, views), labels, TEMPERATURE))


def _assert_params_close(actual, expected, atol=1e-5):
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], atol=atol, err_msg=name)


def test_the_jnp_reference_loss_is_the_naive_loops():
    embeddings = np.asarray(_embed(_model_params(_dense_model()), _batch()[0]))
    np.testing.assert_allclose(
        _supcon(embeddings, LABELS, TEMPERATURE),
        loss_reference.supcon(embeddings, LABELS, temperature=TEMPERATURE), rtol=1e-5)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
def test_one_sgd_step_equals_jax_grad_of_the_hand_written_step(weighted):
    assert keras.backend.backend() == "jax"
    model = _dense_model(probe=False)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y = _batch()
    weights = np.linspace(0.5, 1.5, BATCH, dtype="float32") if weighted else None
    start = _model_params(model)
    loss, gradients = jax.value_and_grad(_step_loss)(
        start, x, y, np.ones(BATCH, "float32") if weights is None else weights)
    assert max(float(np.abs(g).max()) for g in gradients.values()) > 1e-3  # a real step

    history = model.fit(x, y, sample_weight=weights, batch_size=BATCH, epochs=1,
                        shuffle=False, verbose=0)

    np.testing.assert_allclose(history.history["loss"][0], loss, rtol=1e-5)
    _assert_params_close(_model_params(model),
                         {name: start[name] - 0.1 * gradients[name] for name in start})


def _warmup_cosine(step, peak, warmup_steps, total_steps):
    """The schedule's formula: linear warmup from 0, then cosine decay to 0."""
    if step < warmup_steps:
        return peak * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def test_lars_with_a_warmup_cosine_schedule_follows_the_update_formula():
    peak, momentum, decay, eta = 0.5, 0.9, 0.01, 0.01
    model = _dense_model(probe=False)
    model.compile(optimizer=optimizers.LARS(
        schedules.WarmupCosineDecay(peak, total_steps=4, warmup_steps=1),
        momentum=momentum, weight_decay=decay, eta=eta))
    x, y = _batch()
    params = _model_params(model)
    velocity = {name: np.zeros_like(value) for name, value in params.items()}
    for step in range(3):  # warmup (rate 0), then two decaying rates
        rate = _warmup_cosine(step, peak, 1, 4)
        gradients = jax.grad(_step_loss)(params, x, y, np.ones(BATCH, "float32"))
        for name, weight in params.items():
            gradient = np.asarray(gradients[name])
            trust = 1.0
            if weight.ndim > 1:  # biases (rank 1) are excluded from decay and adaptation
                gradient = gradient + decay * weight
                trust = eta * np.linalg.norm(weight) / np.linalg.norm(gradient)
            velocity[name] = momentum * velocity[name] + rate * trust * gradient
            params[name] = weight - velocity[name]

    model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0)

    assert int(model.optimizer.iterations) == 3
    _assert_params_close(_model_params(model), params)


def test_resnet_with_batch_norm_trains_and_updates_its_moving_statistics():
    keras.utils.set_random_seed(2)
    encoder = resnet.resnet(18, input_shape=(8, 8, 3), stem="cifar", width_multiplier=0.125)
    norms = [layer for layer in encoder.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(isinstance(layer, batch_norm.BatchNormalization) for layer in norms)
    stem_norm = norms[0]
    model = supcon_tf.SupConModel(encoder, projection_units=(16, 8), num_classes=3)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    views = np.random.default_rng(3).uniform(size=(BATCH, VIEWS, 8, 8, 3)).astype("float32")
    # The stem's batch norm sees the view-major encoder batch through the (untrained) stem conv.
    stem = keras.Model(encoder.input, stem_norm.input)
    stem_output = np.asarray(stem(np.swapaxes(views, 0, 1).reshape(-1, 8, 8, 3)))
    mean, variance = stem_output.mean(axis=(0, 1, 2)), stem_output.var(axis=(0, 1, 2))
    probe_kernel = np.array(model.probe.weights[0])

    first = model.fit(views, LABELS, batch_size=BATCH, epochs=1, verbose=0).history
    np.testing.assert_allclose(stem_norm.moving_mean, 0.1 * mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stem_norm.moving_variance, 0.9 + 0.1 * variance,
                               rtol=1e-4, atol=1e-6)
    later = model.fit(views, LABELS, batch_size=BATCH, epochs=4, verbose=0).history

    losses = first["loss"] + later["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    assert 0.0 <= later["probe_accuracy"][-1] <= 1.0
    assert not np.allclose(model.probe.weights[0], probe_kernel)  # the online probe trains
    assert not np.allclose(stem_norm.moving_mean, 0.1 * mean)  # and the statistics move on


def test_memory_queue_fills_with_the_momentum_encoders_keys():
    momentum = 0.5
    model = _dense_model(probe=False, memory_size=2 * VIEWS * BATCH, memory_momentum=momentum)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y = _batch()
    start = _model_params(model)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)

    # Key networks: m * (start, equal to the query networks) + (1 - m) * updated query networks.
    _assert_params_close(
        _params(model.key_encoder, model.key_head),
        {name: momentum * start[name] + (1 - momentum) * value
         for name, value in _model_params(model).items()})
    # The queue holds this step's keys from the updated key networks, view-major, then empty.
    keys = _embed(_params(model.key_encoder, model.key_head), x)
    steps_keys = VIEWS * BATCH
    queue = model.queue
    queue_keys = np.array(queue.keys)
    np.testing.assert_allclose(queue_keys[:steps_keys],
                               np.swapaxes(keys, 0, 1).reshape(steps_keys, -1), atol=1e-5)
    np.testing.assert_array_equal(queue_keys[steps_keys:], 0.0)
    np.testing.assert_array_equal(queue.labels, np.concatenate([np.tile(y, VIEWS),
                                                               -np.ones(steps_keys)]))
    assert int(queue.pointer) == steps_keys

    # The next step contrasts against the filled half of the queue; then the queue is full.
    x2, y2 = _batch(seed=1)[0], np.roll(y, 1)
    memory = np.array(queue.keys), np.array(queue.labels)
    embeddings = np.asarray(_embed(_model_params(model), x2))
    history = model.fit(x2, y2, batch_size=BATCH, epochs=1, shuffle=False, verbose=0).history
    np.testing.assert_allclose(
        history["loss"][0],
        loss_reference.supcon(embeddings, y2, temperature=TEMPERATURE,
                              memory_features=memory[0], memory_labels=memory[1]).mean(),
        rtol=1e-5)
    np.testing.assert_array_equal(queue.labels,
                                  np.concatenate([np.tile(y, VIEWS), np.tile(y2, VIEWS)]))
    assert int(queue.pointer) == 0


def test_evaluate_and_predict_give_the_reference_values():
    model = _dense_model(probe=False)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y = _batch(seed=2)
    params = _model_params(model)
    expected = loss_reference.supcon(np.asarray(_embed(params, x)), y,
                                     temperature=TEMPERATURE).mean()

    result = model.evaluate(x, y, batch_size=BATCH, verbose=0, return_dict=True)

    np.testing.assert_allclose(result["loss"], expected, rtol=1e-5)
    features = (np.maximum(x[:, 0] @ params["0/kernel"] + params["0/bias"], 0.0)
                @ params["1/kernel"] + params["1/bias"])
    np.testing.assert_allclose(model.predict(x[:, 0], verbose=0), features, atol=1e-5)


def test_keras_file_round_trip_keeps_weights_and_lars_state(tmp_path):
    model = _dense_model(num_classes=3)
    model.compile(optimizer=optimizers.LARS(
        schedules.WarmupCosineDecay(0.5, total_steps=4, warmup_steps=1), weight_decay=1e-3))
    x, y = _batch()
    model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)

    restored = keras.models.load_model(path)

    assert isinstance(restored, supcon_tf.SupConModel)
    assert isinstance(restored.optimizer, optimizers.LARS)
    assert restored.optimizer.get_config() == model.optimizer.get_config()
    assert "WarmupCosineDecay" in str(restored.optimizer.get_config()["learning_rate"])
    assert int(restored.optimizer.iterations) == 2
    for saved, loaded in zip(model.weights + model.optimizer.variables,
                             restored.weights + restored.optimizer.variables):
        np.testing.assert_array_equal(loaded, saved, err_msg=saved.path)
    # One more step from either gives the same weights (momentum and schedule carried over).
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    restored.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    for trained, loaded in zip(model.weights, restored.weights):
        np.testing.assert_allclose(loaded, trained, atol=1e-6, err_msg=trained.path)


def test_gradient_chunks_are_refused_with_a_clear_error():
    model = _dense_model(gradient_chunks=2)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y = _batch()
    with pytest.raises(ValueError, match="gradient_chunks=2 runs on the TensorFlow backend"):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
