"""The package without TensorFlow (`make test-jax`, .venv-jax): what imports and what refuses.

Checked in a fresh process where `tensorflow` is blocked (`sys.modules["tensorflow"] = None`:
importing it fails and `importlib.util.find_spec` finds nothing), so the check means the same
in .venv-jax, which has no TensorFlow, and in a TensorFlow environment.
"""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.jax

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_WITHOUT_TENSORFLOW = r"""
import sys
sys.modules["tensorflow"] = None  # as if not installed

import keras
import supcon_tf
from supcon_tf import distribute, losses, models, optimizers, schedules
from supcon_tf.models import batch_norm, heads, memory, resnet
from supcon_tf.models import ProjectionHead, SupConModel

assert keras.backend.backend() == "jax", keras.backend.backend()
assert supcon_tf.LARS is optimizers.LARS and supcon_tf.SupConModel is SupConModel
assert distribute.num_replicas_in_sync() == 1
# The model builds without TensorFlow (the ResNet is trained in jax_step_test.py).
encoder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
SupConModel(encoder, projection_units=(8, 4), memory_size=16, num_classes=2)
schedules.WarmupCosineDecay(0.1, total_steps=10)(3)
for name in ("data", "evaluation", "export", "monitors"):
    try:
        getattr(supcon_tf, name)
    except ImportError as error:
        assert "tensorflow" in str(error), error
    else:
        raise AssertionError(f"supcon_tf.{name} imported without TensorFlow")
print("ok")
"""


def test_the_keras_ops_parts_import_and_build_without_tensorflow():
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": REPO}
    result = subprocess.run([sys.executable, "-c", _WITHOUT_TENSORFLOW], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), (
        result.stdout[-2000:] + result.stderr[-3000:])
