"""Tests of the SavedModel serving contract (supcon_tf.export).

A small convolutional SupConModel is exported; a fresh process (so that an abort inside a
kernel would fail this test instead of killing pytest) loads it without supcon_tf and calls
every signature with good and bad inputs. Good inputs must give the encoder's own outputs; bad
rank, size, channels, dtype and value range must each raise a catchable error naming the
expected input.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from supcon_tf import export
from supcon_tf.models.supcon_model import SupConModel

SIDE, CHANNELS = 8, 3

_CALLER = r"""
import json, sys
import numpy as np
import tensorflow as tf

loaded = tf.saved_model.load(sys.argv[1])
rng = np.random.default_rng(0)
good = rng.uniform(size=(2, 8, 8, 3)).astype(np.float32)
cases = {
    "good": tf.constant(good),
    "rank3": tf.constant(good[0]),
    "size": tf.constant(rng.uniform(size=(2, 16, 16, 3)).astype(np.float32)),
    "channels": tf.constant(good[..., :1]),
    "range_255": tf.constant(good * 255.0),
    "uint8": tf.constant((good * 255).astype(np.uint8)),
    "empty": tf.zeros([0, 8, 8, 3]),
}
out = {}
for name in sorted(loaded.signatures):
    for case, images in cases.items():
        try:
            result = loaded.signatures[name](images=images)
            out[f"{name}/{case}"] = {k: v.numpy().tolist() for k, v in result.items()}
        except (tf.errors.InvalidArgumentError, TypeError, ValueError) as error:
            out[f"{name}/{case}"] = {"error": type(error).__name__, "message": str(error)}
# The module's own functions convert numpy input to float32 silently: the range check holds.
try:
    loaded.embed((good * 255).astype(np.uint8))
    out["module_uint8"] = "accepted"
except tf.errors.InvalidArgumentError as error:
    out["module_uint8"] = str(error)
print(json.dumps({"good": good.tolist(), "out": out}))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.Input((SIDE, SIDE, CHANNELS)),
                                keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
                                keras.layers.GlobalAveragePooling2D()], name="encoder")
    model = SupConModel(encoder, projection_units=[6, 4], num_classes=3)
    model(np.zeros((1, 2, SIDE, SIDE, CHANNELS), np.float32))
    path = str(tmp_path_factory.mktemp("export") / "saved_model")
    assert export.export_saved_model(model, path) == ["classify", "embed", "project"]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", _CALLER, path], capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return model, np.asarray(report["good"], np.float32), report["out"]


def test_good_inputs_give_the_model_outputs(exported):
    model, good, out = exported
    embeddings = model.encoder(good, training=False).numpy()
    np.testing.assert_allclose(out["embed/good"]["embeddings"], embeddings, rtol=1e-5,
                               atol=1e-6)
    projections = model.projection_head(embeddings, training=False).numpy()
    np.testing.assert_allclose(out["project/good"]["projections"], projections, rtol=1e-5,
                               atol=1e-6)
    assert np.asarray(out["classify/good"]["probabilities"]).shape == (2, 3)
    assert out["embed/empty"] == {"embeddings": []}  # an empty batch is served, not refused


@pytest.mark.parametrize("signature", ["embed", "project", "classify"])
@pytest.mark.parametrize("case, expected", [
    ("rank3", "[?,8,8,3]"), ("size", "[?,8,8,3]"), ("channels", "[?,8,8,3]"),
    ("range_255", "in [0, 1]"), ("uint8", "float")])
def test_bad_inputs_raise_a_catchable_error_naming_the_expectation(exported, signature, case,
                                                                   expected):
    _, _, out = exported
    result = out[f"{signature}/{case}"]
    assert "error" in result, f"{signature} accepted {case}"
    assert expected in result["message"]


def test_uint8_through_the_module_function_is_refused_not_rescaled(exported):
    _, _, out = exported
    assert out["module_uint8"] != "accepted" and "divide uint8 images by 255" in \
        out["module_uint8"]
