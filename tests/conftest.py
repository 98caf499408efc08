"""Test-session set-up shared by every test module.

Two logical CPU devices are configured before TensorFlow initialises its runtime, so the
distribution tests can run a `MirroredStrategy` over "/cpu:0" and "/cpu:1" (the session fixture
`two_cpu_strategy`; never a strategy of their own, see its docstring) and compare it
with a single device. Nothing else in the suite notices the second device.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
if _cpus:
    try:
        tf.config.set_logical_device_configuration(
            _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    except RuntimeError:  # The runtime was initialised by an earlier import.
        pass

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def two_cpu_strategy():
    """The one `MirroredStrategy` over the two logical CPUs that every test shares.

    Each `MirroredStrategy` instance numbers its collective ops from the same instance keys, so
    a second instance in the same process collides with the first ("Collective instance ...
    expected type ...") and aborts the collective executor for the rest of the process. Tests
    therefore never create their own.
    """
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    return strategy
