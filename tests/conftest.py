"""Test-session set-up shared by every test module.

Two logical CPU devices are configured before TensorFlow initialises its runtime, so the
distribution tests can run a `MirroredStrategy` over "/cpu:0" and "/cpu:1" (the session fixture
`two_cpu_strategy`; never a strategy of their own, see its docstring) and compare it
with a single device. Nothing else in the suite notices the second device.

The Keras backend is TensorFlow unless `KERAS_BACKEND` says otherwise. Tests marked `jax`
(`tests/jax_backend/`) need the JAX backend: `make test-jax` runs them with `KERAS_BACKEND=jax`
in `.venv-jax`, which has no TensorFlow, so nothing here imports TensorFlow under another
backend; a TensorFlow-backend session deselects them (they show in the "deselected" count).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

if os.environ["KERAS_BACKEND"] == "tensorflow":
    import tensorflow as tf

    _cpus = tf.config.list_physical_devices("CPU")
    if _cpus:
        try:
            tf.config.set_logical_device_configuration(
                _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
        except RuntimeError:  # The runtime was initialised by an earlier import.
            pass

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Deselects the tests marked `jax` unless Keras runs on the JAX backend.

    Keras fixes its backend once per process, so a TensorFlow-backend session cannot run them;
    `make test-jax` (which `.ci/run` calls after `make test`) does. Marker expressions (`-m
    "not slow"`, `-m jax`) still apply on top.
    """
    import keras

    if keras.backend.backend() == "jax":
        return
    deselected = [item for item in items if item.get_closest_marker("jax") is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item.get_closest_marker("jax") is None]


@pytest.fixture(scope="session")
def two_cpu_strategy():
    """The one `MirroredStrategy` over the two logical CPUs that every test shares.

    Each `MirroredStrategy` instance numbers its collective ops from the same instance keys, so
    a second instance in the same process collides with the first ("Collective instance ...
    expected type ...") and aborts the collective executor for the rest of the process. Tests
    therefore never create their own.
    """
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    return strategy
