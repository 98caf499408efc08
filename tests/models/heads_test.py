"""Tests for supcon_tf.models.heads: forward passes recomputed in numpy from the weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from supcon_tf.models import heads


def _features(batch=4, dim=16, scale=1.0, seed=0):
    return (scale * np.random.default_rng(seed).normal(size=(batch, dim))).astype("float32")


def _numpy_normalize(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _numpy_projection(head, x):
    """Inference-mode forward pass of `head` in float64 numpy, read from its sublayers."""
    x = np.asarray(x, np.float64)
    if head.normalize_input:
        x = _numpy_normalize(x)
    for index, dense in enumerate(head.dense_layers):
        x = x @ dense.kernel.numpy()
        if dense.use_bias:
            x = x + dense.bias.numpy()
        if head.use_batch_norm:
            bn = head.batch_norm_layers[index]
            x = (x - bn.moving_mean.numpy()) / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
            x = x * bn.gamma.numpy()
            if bn.center:
                x = x + bn.beta.numpy()
        if index < len(head.dense_layers) - 1:
            x = np.maximum(x, 0.0)
    return _numpy_normalize(x)


def _randomize(layer, seed=1):
    """Random weights everywhere (positive where BN variances sit), so nothing is trivial."""
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") * rng.choice([-1, 1])
                       if "variance" not in name else
                       rng.uniform(0.5, 1.5, w.shape).astype("float32")
                       for name, w in zip([v.path for v in layer.weights], layer.get_weights())])


@pytest.mark.parametrize("units,use_batch_norm,normalize_input", [
    ([8], False, False),
    ([32, 8], False, False),
    ([32, 8], False, True),
    ([32, 32, 8], True, False),
    ([32, 32, 8], True, True),
])
def test_projection_matches_numpy(units, use_batch_norm, normalize_input):
    head = heads.ProjectionHead(units, use_batch_norm=use_batch_norm,
                                normalize_input=normalize_input)
    x = _features()
    head.build(x.shape)
    if use_batch_norm:
        _randomize(head)
    out = head(x, training=False)
    assert out.dtype == "float32" and tuple(out.shape) == (4, units[-1])
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out, _numpy_projection(head, x), rtol=1e-4, atol=1e-5)


def test_linear_and_mlp_structure():
    linear = heads.ProjectionHead([128])
    linear.build((None, 64))
    assert [tuple(w.shape) for w in linear.trainable_weights] == [(64, 128), (128,)]
    # No activation: the output is the normalised affine map.
    x = _features(dim=64)
    pre = x @ linear.dense_layers[0].kernel.numpy() + linear.dense_layers[0].bias.numpy()
    np.testing.assert_allclose(linear(x), _numpy_normalize(pre), rtol=1e-4, atol=1e-5)

    mlp = heads.ProjectionHead([2048, 128])
    mlp.build((None, 2048))
    assert [tuple(w.shape) for w in mlp.trainable_weights] == [
        (2048, 2048), (2048,), (2048, 128), (128,)]
    assert mlp.batch_norm_layers == []

    simclr = heads.ProjectionHead([64, 64, 32], use_batch_norm=True)
    simclr.build((None, 48))
    assert [type(layer).__name__ for layer in simclr.dense_layers + simclr.batch_norm_layers] \
        == ["Dense"] * 3 + ["BatchNormalization"] * 3
    assert not any(dense.use_bias for dense in simclr.dense_layers)
    assert [bn.center for bn in simclr.batch_norm_layers] == [True, True, False]
    # Weights: 3 kernels, gamma+beta for the two hidden BNs, gamma for the last.
    assert len(simclr.trainable_weights) == 3 + 2 + 2 + 1


def test_batch_norm_training_uses_batch_statistics():
    head = heads.ProjectionHead([6], use_batch_norm=True)
    x = _features(batch=16, dim=5)
    out = head(x, training=True).numpy()
    pre = x.astype(np.float64) @ head.dense_layers[0].kernel.numpy()
    standardized = (pre - pre.mean(0)) / np.sqrt(pre.var(0) + 1e-5)
    np.testing.assert_allclose(out, _numpy_normalize(standardized), rtol=1e-4, atol=1e-5)


def test_single_int_units():
    head = heads.ProjectionHead(128)
    assert head.units == [128]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("scale", [1e-4, 1.0, 300.0])
def test_mixed_precision_output_is_float32_unit_norm(dtype, scale):
    """|x|^2 underflows (1e-4) or overflows (300) in float16; the float32 norm does not."""
    policy = "mixed_float16" if dtype == "float16" else "mixed_bfloat16"
    head = heads.ProjectionHead([16, 8], normalize_input=True, dtype=policy)
    x = _features(dim=32, scale=scale)
    out = head(tf.cast(x, dtype), training=False)
    assert out.dtype == "float32"
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)
    # The input normalisation sees the exact (upcast) inputs: compare with float64 numpy, up
    # to the precision the Dense layers compute in.
    np.testing.assert_allclose(out, _numpy_projection(head, tf.cast(tf.cast(x, dtype),
                                                                    "float32")), atol=0.05)


def test_l2_normalize_float16_extremes_and_zero():
    x = tf.constant([[1e-5, 2e-5], [3e4, 4e4], [0.0, 0.0]], "float16")
    out = heads.l2_normalize(x)
    assert out.dtype == "float32"
    np.testing.assert_allclose(out[:2], [[0.4472136, 0.8944272], [0.6, 0.8]], rtol=2e-3)
    np.testing.assert_array_equal(out[2], [0.0, 0.0])  # Zero rows stay zero, not NaN.
    # In float16 the squared norms underflow to 0 and overflow to inf.
    assert float(tf.reduce_sum(tf.square(x[0]))) == 0.0
    assert np.isinf(float(tf.reduce_sum(tf.square(x[1]))))


def test_projection_under_global_mixed_policy():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        head = heads.ProjectionHead([16, 8])
        out = head(_features(scale=1e3))
    finally:
        keras.config.set_dtype_policy(previous)
    assert head.dense_layers[0].compute_dtype == "float16"
    assert out.dtype == "float32" and np.all(np.isfinite(out))


def test_classification_matches_numpy():
    head = heads.ClassificationHead(5, normalize_input=True)
    x = _features(dim=7)
    logits = head(x)
    kernel, bias = head.dense.kernel.numpy(), head.dense.bias.numpy()
    np.testing.assert_allclose(logits, _numpy_normalize(x) @ kernel + bias, rtol=1e-4, atol=1e-6)
    assert tuple(logits.shape) == (4, 5) and logits.dtype == "float32"
    assert float(np.std(kernel)) < 0.05  # RandomNormal(stddev=0.01) by default.


def test_classification_float16_logits_are_float32():
    head = heads.ClassificationHead(3, dtype="mixed_float16")
    logits = head(tf.cast(_features(), "float16"))
    assert head.dense.compute_dtype == "float16"
    assert logits.dtype == "float32"


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_classification_stop_gradient(stop_gradient):
    head = heads.ClassificationHead(3, stop_gradient=stop_gradient)
    x = tf.constant(_features(dim=6))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.square(head(x)))
    input_grad, kernel_grad = tape.gradient(loss, [x, head.dense.kernel])
    assert kernel_grad is not None and np.any(kernel_grad.numpy() != 0)  # The head still trains.
    if stop_gradient:
        assert input_grad is None or not np.any(input_grad.numpy())
    else:
        # d/dx sum((x W + b)^2) = 2 (x W + b) W^T.
        kernel = head.dense.kernel.numpy()
        expected = 2 * (x.numpy() @ kernel + head.dense.bias.numpy()) @ kernel.T
        np.testing.assert_allclose(input_grad, expected, rtol=1e-4, atol=1e-7)


def test_classification_stop_gradient_in_model():
    """Behind the head, an encoder's weights get no gradient from the classification loss."""
    inputs = keras.Input((6,))
    encoder = keras.layers.Dense(4, name="encoder")
    logits = heads.ClassificationHead(3)(encoder(inputs))
    model = keras.Model(inputs, logits)
    x = _features(dim=6)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            np.array([0, 1, 2, 0]), model(x), from_logits=True))
    grads = tape.gradient(loss, encoder.trainable_weights)
    assert all(g is None or not np.any(g.numpy()) for g in grads)


@pytest.mark.parametrize("layer", [
    heads.ProjectionHead([32, 32, 8], use_batch_norm=True, normalize_input=True,
                         sync_batch_norm=True, batch_norm_momentum=0.8, batch_norm_epsilon=1e-3,
                         kernel_initializer="he_normal", name="proj"),
    heads.ClassificationHead(7, stop_gradient=False, normalize_input=True, use_bias=False,
                             kernel_initializer="zeros", name="probe"),
], ids=["projection", "classification"])
def test_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    # The registered name deserialises through Keras' generic path too.
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == f"supcon_tf>{type(layer).__name__}"
    assert keras.saving.deserialize_keras_object(serialized).get_config() == config


def test_keras_save_and_load(tmp_path):
    inputs = keras.Input((12,))
    projection = heads.ProjectionHead([16, 16, 8], use_batch_norm=True, normalize_input=True,
                                      name="projection")
    probe = heads.ClassificationHead(4, name="probe")
    model = keras.Model(inputs, {"z": projection(inputs), "logits": probe(inputs)})
    _randomize(projection, seed=3)
    _randomize(probe, seed=4)
    x = _features(dim=12)
    path = str(tmp_path / "heads.keras")
    model.save(path)
    restored = keras.models.load_model(path)  # No custom_objects: the classes are registered.
    assert isinstance(restored.get_layer("projection"), heads.ProjectionHead)
    expected, actual = model(x, training=False), restored(x, training=False)
    for key in ("z", "logits"):
        np.testing.assert_array_equal(actual[key], expected[key])


@pytest.mark.parametrize("kwargs,match", [
    (dict(units=[]), r"units must be a non-empty sequence of positive ints, got \[\]"),
    (dict(units=[128, 0]), r"got \[128, 0\]; e.g. \[128\]"),
    (dict(units=[2048.0, 128]), r"got \[2048.0, 128\]"),
    (dict(units=None), r"got None"),
])
def test_projection_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        heads.ProjectionHead(**kwargs)


@pytest.mark.parametrize("num_classes", [0, -3, 2.5, True])
def test_classification_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match=rf"num_classes must be a positive int, got "
                                         rf"{num_classes!r}"):
        heads.ClassificationHead(num_classes)


@pytest.mark.parametrize("head", [heads.ProjectionHead([8]), heads.ClassificationHead(3)],
                         ids=["projection", "classification"])
@pytest.mark.parametrize("shape", [(None, 4, 4, 16), (None, None)])
def test_bad_input_shape(head, shape):
    with pytest.raises(ValueError,
                       match=r"expects features \[batch, dim\].*GlobalAveragePooling2D"):
        head.build(shape)
