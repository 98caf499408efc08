"""The train step compiles with XLA (`jit_compile=True`), the nearest proxy on a CPU for TPU
compilation: the whole step (ResNet, head, probe, loss, SGD), plain and with the memory queue,
against the same run without XLA.

Not tested here: XLA under `MirroredStrategy` over two logical CPUs, which TensorFlow refuses
for any function touching a variable of the other device (its "variable on a different device"
XLA limit, hit even by the strategy's own variables); TPUStrategy compiles each replica's step
itself, and the cross-replica gather is tested without XLA in tests/losses_test.py."""

import keras
import numpy as np
import pytest

from supcon_tf.models import resnet
from supcon_tf.models.supcon_model import SupConModel

IMAGE = (16, 16, 3)


def _data(batch=8, steps=2, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(size=(batch * steps, 2) + IMAGE).astype("float32"),
            rng.integers(0, 3, size=batch * steps))


def _model(memory_size=0):
    keras.utils.set_random_seed(0)
    encoder = resnet.resnet(18, input_shape=IMAGE, width_multiplier=0.125, stem="cifar")
    return SupConModel(encoder, projection_units=[16, 8], num_classes=3,
                       memory_size=memory_size)


def _train(model, x, y, jit_compile, start=None):
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=jit_compile)
    if start is not None:
        for variable, value in zip(model.weights, start):
            variable.assign(value)
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return history.history["loss"][-1], [w.numpy() for w in model.weights]


@pytest.mark.parametrize("memory_size", [0, 32])
def test_xla_step_equals_the_graph_step(memory_size):
    x, y = _data()
    eager = _model(memory_size)
    start = [w.numpy() for w in eager.weights]
    loss, weights = _train(eager, x, y, jit_compile=False)
    xla = _model(memory_size)
    xla_loss, xla_weights = _train(xla, x, y, jit_compile=True, start=start)
    assert xla.jit_compile is True  # Keras kept XLA on (it falls back when a model cannot)
    np.testing.assert_allclose(xla_loss, loss, rtol=1e-4)
    for a, b in zip(xla_weights, weights):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
