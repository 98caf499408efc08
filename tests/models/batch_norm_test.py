"""Tests for supcon_tf.models.batch_norm.

The reference is Keras' own `keras.layers.BatchNormalization` with the same weights (an
independent implementation: separate moment and normalisation ops), plus the closed form of
the moving statistics after one step in numpy.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from supcon_tf.models import batch_norm

_TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def _pair(input_shape, seed=0, **kwargs):
    """A stock and a fused layer with the same random weights (gamma, beta, moving stats)."""
    options = dict(momentum=0.9, epsilon=1e-5, **kwargs)
    stock = keras.layers.BatchNormalization(**options)
    fused = batch_norm.BatchNormalization(**options)
    stock.build(input_shape)
    fused.build(input_shape)
    rng = np.random.default_rng(seed)
    weights = [rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in stock.get_weights()]
    stock.set_weights(weights)
    fused.set_weights(weights)
    return stock, fused


def _call_with_gradients(layer, images, cotangent, training):
    """(outputs, gradients of <outputs, cotangent> wrt the images and the trainable weights)."""
    images = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        tape.watch(images)
        outputs = layer(images, training=training)
        objective = tf.reduce_sum(tf.cast(outputs, "float32") * cotangent)
    return outputs, tape.gradient(objective, [images] + layer.trainable_weights)


def _step(layer, images, cotangent, training, graph=False):
    """`_call_with_gradients` eagerly or traced, as numpy arrays."""
    fn = tf.function(_call_with_gradients) if graph else _call_with_gradients
    outputs, gradients = fn(layer, images, cotangent, training)
    return outputs.numpy(), [g.numpy() for g in gradients]


def _images(shape, seed=1, dtype="float32"):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * 3.0 + 2.0).astype(dtype)


def _fused_graph_ops(layer, images, training):
    """The op types of the traced call `layer(images, training)`."""
    fn = tf.function(lambda x: layer(x, training=training))
    graph = fn.get_concrete_function(tf.TensorSpec(images.shape, images.dtype)).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("graph", [False, True])
def test_matches_keras_batch_norm(training, center, scale, graph):
    """Outputs, gradients (images, gamma, beta) and moving statistics over three steps."""
    shape = (6, 5, 7, 4)
    stock, fused = _pair(shape, center=center, scale=scale)
    cotangent = tf.constant(np.random.default_rng(3).normal(size=shape).astype("float32"))
    for step in range(3):
        images = _images(shape, seed=step)
        want, want_grads = _step(stock, images, cotangent, training, graph)
        got, got_grads = _step(fused, images, cotangent, training, graph)
        np.testing.assert_allclose(got, want, **_TOLERANCE)
        assert len(got_grads) == len(want_grads)
        for got_grad, want_grad in zip(got_grads, want_grads):
            np.testing.assert_allclose(got_grad, want_grad, **_TOLERANCE)
    for got, want in zip(fused.non_trainable_weights, stock.non_trainable_weights):
        np.testing.assert_allclose(got.numpy(), want.numpy(), **_TOLERANCE)


def test_moving_statistics_closed_form():
    """One training step from (0, 1): the moving variance averages the biased (1/n) batch
    variance, as Keras does (TensorFlow's kernel returns the unbiased one)."""
    shape = (3, 2, 2, 5)  # n = 12 per channel, so 1/n and 1/(n-1) differ by 9%.
    layer = batch_norm.BatchNormalization(momentum=0.8, epsilon=1e-5)
    images = _images(shape)
    layer(images, training=True)
    flat = images.reshape(-1, shape[-1]).astype("float64")
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.2 * flat.mean(0), **_TOLERANCE)
    np.testing.assert_allclose(layer.moving_variance.numpy(),
                               0.8 + 0.2 * flat.var(0, ddof=0), **_TOLERANCE)


def test_uses_the_fused_kernel_for_nhwc():
    images = _images((4, 3, 3, 2))
    layer = batch_norm.BatchNormalization()
    layer.build(images.shape)
    for training in (True, False):
        ops = _fused_graph_ops(layer, images, training)
        assert "FusedBatchNormV3" in ops, sorted(ops)
        assert "Mean" not in ops, sorted(ops)


@pytest.mark.parametrize("input_shape,kwargs", [
    ((8, 6), {}),                       # rank 2 (a head's batch norm)
    ((4, 5, 6), {}),                    # rank 3
    ((4, 3, 5, 6), {"axis": 1}),        # channels-first
    ((4, 3, 5, 6), {"renorm": True}),   # batch renormalization
])
def test_falls_back_to_keras_where_the_kernel_does_not_apply(input_shape, kwargs):
    stock, fused = _pair(input_shape, **kwargs)
    images = _images(input_shape)
    ops = _fused_graph_ops(fused, images, training=True)
    assert "FusedBatchNormV3" not in ops
    cotangent = tf.ones(input_shape)
    for training in (True, False):
        want, want_grads = _step(stock, images, cotangent, training)
        got, got_grads = _step(fused, images, cotangent, training)
        np.testing.assert_array_equal(got, want)
        for got_grad, want_grad in zip(got_grads, want_grads):
            np.testing.assert_array_equal(got_grad, want_grad)
    for got, want in zip(fused.weights, stock.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_mask_falls_back_to_keras():
    shape = (4, 3, 5, 6)
    stock, fused = _pair(shape)
    images = _images(shape)
    mask = np.random.default_rng(0).uniform(size=shape[:-1]) > 0.3
    np.testing.assert_array_equal(fused(images, training=True, mask=mask),
                                  stock(images, training=True, mask=mask))
    np.testing.assert_array_equal(fused.moving_variance.numpy(), stock.moving_variance.numpy())


def test_frozen_layer_runs_in_inference_mode():
    """`trainable=False` means inference mode and no statistics update, as in Keras."""
    shape = (4, 3, 3, 5)
    stock, fused = _pair(shape)
    stock.trainable = fused.trainable = False
    images = _images(shape)
    before = [w.copy() for w in fused.get_weights()]
    np.testing.assert_allclose(fused(images, training=True), stock(images, training=True),
                               **_TOLERANCE)
    for got, want in zip(fused.get_weights(), before):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    """Half-precision inputs and outputs, float32 statistics and weights."""
    shape = (6, 4, 4, 3)
    stock, fused = _pair(shape, dtype=policy)
    assert fused.compute_dtype == policy.split("_")[1]
    assert all(w.dtype == "float32" for w in fused.weights)
    cotangent = tf.constant(np.random.default_rng(3).normal(size=shape).astype("float32"))
    half = {"mixed_float16": 2e-3, "mixed_bfloat16": 2e-2}[policy]  # the half type's epsilon
    for step in range(2):
        images = tf.cast(_images(shape, seed=step), fused.compute_dtype)
        want, want_grads = _step(stock, images, cotangent, training=True)
        got, got_grads = _step(fused, images, cotangent, training=True)
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got.astype("float32"), want.astype("float32"),
                                   rtol=half, atol=half)
        for got_grad, want_grad in zip(got_grads, want_grads):
            np.testing.assert_allclose(np.asarray(got_grad, "float32"),
                                       np.asarray(want_grad, "float32"),
                                       rtol=4 * half, atol=4 * half)
    # Statistics accumulate in float32 from the same half-precision inputs.
    for got, want in zip(fused.non_trainable_weights, stock.non_trainable_weights):
        np.testing.assert_allclose(got.numpy(), want.numpy(), **_TOLERANCE)


def test_config_round_trip():
    layer = batch_norm.BatchNormalization(
        momentum=0.8, epsilon=1e-4, center=False, synchronized=True,
        gamma_initializer="zeros", name="bn")
    config = layer.get_config()
    assert config == keras.layers.BatchNormalization(
        momentum=0.8, epsilon=1e-4, center=False, synchronized=True,
        gamma_initializer="zeros", name="bn").get_config()
    restored = batch_norm.BatchNormalization.from_config(config)
    assert restored.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert keras.saving.get_registered_name(
        batch_norm.BatchNormalization) == "supcon_tf>BatchNormalization"
    again = keras.saving.deserialize_keras_object(serialized)
    assert type(again) is batch_norm.BatchNormalization
    assert again.get_config() == config


def test_variables_and_checkpoint_match_keras_layout(tmp_path):
    """Same variable paths, and a checkpoint of the stock layer restores into the fused one."""
    shape = (4, 3, 3, 5)
    stock, _ = _pair(shape)
    fused = batch_norm.BatchNormalization(name=stock.name)
    fused.build(shape)
    assert [v.path for v in fused.weights] == [v.path for v in stock.weights]
    path = tf.train.Checkpoint(layer=stock).write(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(layer=fused).read(path).assert_consumed()
    for got, want in zip(fused.get_weights(), stock.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_sync_batch_norm_is_exact_under_two_replicas(two_cpu_strategy):
    """`synchronized=True` under two replicas: outputs, input gradients and moving statistics
    equal one device on the whole batch (Keras' cross-replica moments, not the kernel's local
    ones)."""
    shape = (8, 3, 3, 4)
    images = _images(shape)
    cotangent = np.random.default_rng(3).normal(size=shape).astype("float32")
    single, _ = _pair(shape, synchronized=True)
    strategy = two_cpu_strategy
    with strategy.scope():
        fused = batch_norm.BatchNormalization(momentum=0.9, epsilon=1e-5,
                                                   synchronized=True)
        fused.build(shape)
    fused.set_weights(single.get_weights())
    want, want_grads = _step(single, images, tf.constant(cotangent), training=True)
    dataset = tf.data.Dataset.from_tensor_slices((images, cotangent)).batch(shape[0])
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))

    @tf.function
    def replica_step(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fused(x, training=True)
            objective = tf.reduce_sum(y * dy)
        return y, tape.gradient(objective, x)

    outputs, input_grads = strategy.run(replica_step, batch)
    got = np.concatenate([t.numpy() for t in strategy.experimental_local_results(outputs)])
    got_grad = np.concatenate(
        [t.numpy() for t in strategy.experimental_local_results(input_grads)])
    # Sync BN's variance is E[x^2] - E[x]^2 (float32 round-off ~1e-6 here).
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_grad, want_grads[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean.numpy(), single.moving_mean.numpy(),
                               **_TOLERANCE)
    np.testing.assert_allclose(fused.moving_variance.numpy(), single.moving_variance.numpy(),
                               rtol=1e-4, atol=1e-4)


def test_jax_backend_takes_the_keras_path(tmp_path):
    """Under KERAS_BACKEND=jax the layer is Keras' layer: same outputs and statistics."""
    script = tmp_path / "jax_batch_norm.py"
    script.write_text(textwrap.dedent("""
        import keras
        import numpy as np
        from supcon_tf.models import batch_norm

        assert keras.backend.backend() == "jax"
        images = np.random.default_rng(0).normal(size=(4, 3, 3, 5)).astype("float32")
        stock = keras.layers.BatchNormalization(momentum=0.9)
        fused = batch_norm.BatchNormalization(momentum=0.9)
        for training in (True, False):
            np.testing.assert_array_equal(np.asarray(fused(images, training=training)),
                                          np.asarray(stock(images, training=training)))
        print("ok")
    """))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": root, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]
