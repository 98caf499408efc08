"""Test-session set-up shared by every test module.

Two logical CPU devices are configured before TensorFlow initialises its runtime, so the
distribution tests can run `tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])` and compare it
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
