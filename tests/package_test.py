"""The package contract (design.md), checked in fresh processes where it is about imports:
after `import supcon_tf` every public subpackage resolves and a `.keras` file compiled with
LARS and a warm-up schedule reloads with its optimizer state; `SupConModel.compile` refuses
what it would ignore; `loss_options` are validated; `export` keeps Keras' meaning."""

import inspect
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from helpers import REPO
from supcon_tf.models.supcon_model import SupConModel

_FRESH = r"""
import json, sys
import keras
import numpy as np
import supcon_tf

registered = {k for k in keras.saving.get_custom_objects() if k.startswith("supcon_tf>")}
resolved = {name: hasattr(supcon_tf, name) for name in (
    "losses", "models", "optimizers", "schedules", "data", "evaluation", "distribute",
    "export", "monitors")}
resolved["LARS"] = supcon_tf.optimizers.LARS is supcon_tf.LARS
resolved["sources"] = hasattr(supcon_tf.data, "sources")
resolved["linear_probe"] = hasattr(supcon_tf.evaluation, "linear_probe")


def _registered_elsewhere():
    # Serialisable names that only importing some library module (not the package) registers;
    # the binaries are skipped (they define absl flags at import).
    import importlib, pkgutil
    for info in pkgutil.walk_packages(supcon_tf.__path__, "supcon_tf."):
        spec = importlib.util.find_spec(info.name)
        if "app.run(" not in open(spec.origin).read():
            importlib.import_module(info.name)
    now = {k for k in keras.saving.get_custom_objects() if k.startswith("supcon_tf>")}
    return sorted(now - registered)

model = keras.models.load_model(sys.argv[1])
optimizer = model.optimizer
print(json.dumps({
    "resolved": resolved,
    "optimizer": type(optimizer).__name__,
    "schedule": type(optimizer.learning_rate).__name__ if not hasattr(
        optimizer, "_learning_rate") else type(optimizer._learning_rate).__name__,
    "iterations": int(optimizer.iterations.numpy()),
    "optimizer_variables": [np.asarray(v).tolist() for v in optimizer.variables],
    "weights": [np.asarray(w).tolist() for w in model.weights],
    "registered": sorted(registered),
    "registered_by_other_modules": _registered_elsewhere(),
}))
"""


def _encoder():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(),
                             keras.layers.Dense(8), keras.layers.BatchNormalization(),
                             keras.layers.Activation("relu")], name="encoder")


def test_keras_file_with_lars_and_a_schedule_reloads_in_a_fresh_process(tmp_path):
    from supcon_tf import optimizers
    from supcon_tf import schedules

    model = SupConModel(_encoder(), projection_units=[6, 4], num_classes=3)
    schedule = schedules.build_schedule("cosine", 0.5, steps_per_epoch=2, epochs=3,
                                        warmup_epochs=1)
    model.compile(optimizer=optimizers.LARS(schedule, weight_decay=1e-4))
    rng = np.random.default_rng(0)
    model.fit(rng.uniform(size=(8, 2, 4, 4, 3)).astype("float32"), np.arange(8) % 3,
              batch_size=4, epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    env = dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", _FRESH, path], capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(loaded["resolved"].values()), loaded["resolved"]
    # Every serialisable class is registered by `import supcon_tf` alone, whatever module it is in.
    assert loaded["registered_by_other_modules"] == []
    assert {"supcon_tf>SupConModel", "supcon_tf>LARS", "supcon_tf>WarmupCosineDecay",
            "supcon_tf>SupConLoss", "supcon_tf>ProjectionHead"} <= set(loaded["registered"])
    assert loaded["optimizer"] == "LARS" and loaded["schedule"] == "WarmupCosineDecay"
    assert loaded["iterations"] == 2
    assert len(loaded["optimizer_variables"]) == len(model.optimizer.variables)
    for saved, value in zip(loaded["optimizer_variables"], model.optimizer.variables):
        np.testing.assert_allclose(saved, np.asarray(value), rtol=1e-6, atol=1e-7)
    for saved, value in zip(loaded["weights"], model.weights):
        np.testing.assert_allclose(saved, np.asarray(value), rtol=1e-6, atol=1e-7)
    assert any(np.any(np.asarray(v)) for v in loaded["optimizer_variables"][2:])  # momenta


@pytest.mark.parametrize("kwargs, named", [
    ({"loss": "mse"}, "loss"), ({"metrics": ["accuracy"]}, "metrics"),
    ({"weighted_metrics": ["accuracy"]}, "weighted_metrics"),
    ({"loss_weights": [1.0]}, "loss_weights")])
def test_compile_refuses_what_it_would_ignore(kwargs, named):
    model = SupConModel(_encoder(), projection_units=[4])
    with pytest.raises(ValueError, match=f"does not take {named}.*loss='supcon'"):
        model.compile(optimizer="sgd", **kwargs)
    model.compile(optimizer="sgd", jit_compile=False)  # the optimizer alone is fine
    assert model.compiled


@pytest.mark.parametrize("loss, options, message", [
    ("supcon", {"contrast_mod": "one_view"}, r"\['contrast_mod'\] are not options of loss "
     r"'supcon'; its options are: contrast_mode, summation"),
    ("supcon", {"denominator": "some"}, "loss_options .* of loss 'supcon': .*denominator"),
    ("supcon", {"positives_cap": "three"}, "loss_options .* of loss 'supcon'"),
    ("triplet", {"mining": "hardest"}, "loss_options .* of loss 'triplet': .*mining"),
    ("simclr", {"summation": "inside"}, "its options are: none"),
])
def test_loss_options_are_checked_at_construction(loss, options, message):
    with pytest.raises(ValueError, match=message):
        SupConModel(_encoder(), loss=loss, projection_units=[4], loss_options=options)


def test_valid_loss_options_are_accepted_and_used():
    model = SupConModel(_encoder(), projection_units=[4],
                        loss_options={"summation": "inside", "positives_cap": 2})
    assert model.get_config()["loss_options"] == {"summation": "inside", "positives_cap": 2}


def test_export_keeps_keras_meaning():
    assert "format" in inspect.signature(SupConModel.export).parameters
    assert SupConModel.export is keras.Model.export
